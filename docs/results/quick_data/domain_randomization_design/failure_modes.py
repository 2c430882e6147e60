# Failure modes of the family's seed-0 models on pymust_far at the 32-px input (precision, recall, components before post-processing); the development set only.
import numpy as np, pandas as pd, cv2
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor
from sonoseg.data.preprocess import load_cache
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
R='results/quick/'
arr=load_cache(R+'external/pymust_far/cache/inpaint/test.npz')
samples=split.samples_of_part(R+'external/pymust_far/manifest.csv',R+'external/pymust_far/split.csv','test',0).set_index('sample_id')
images=images_to_tensor(arr['images']).numpy()
rows=[]
for net in ['unet','light_unet','lighter_unet_c128','lighter_unet_c1']:
    pr=infer.torch_predictor(R+f'runs/{net}/fold0/seed0/model.pt','cpu')
    probs=np.concatenate([b for _,b in infer.in_batches(pr.run, images)])
    for sid,p in zip(arr['sample_ids'],probs):
        t=read_mask(samples.loc[str(sid)]['mask']).pixels>0
        t32=cv2.resize(t.astype(np.float32),(32,32),interpolation=cv2.INTER_AREA)>0.5
        m=p>0.5
        n,lab=cv2.connectedComponents(m.astype(np.uint8))
        inter=(m&t32).sum()
        rows.append(dict(net=net,sid=str(sid),dice=2*inter/(m.sum()+t32.sum()+1e-9),prec=inter/max(m.sum(),1),rec=inter/max(t32.sum(),1),comps=n-1,pin=p[t32].mean(),pout=p[~t32].mean(), pmax_in=p[t32].max()))
d=pd.DataFrame(rows)
pd.set_option('display.width',200)
print(d.groupby('net')[['dice','prec','rec','comps','pin','pout']].mean().round(3))
print(d[d.dice<0.65].sort_values('dice').round(2).to_string())
