# Hole filling probe on the development sets (the phantom's test images, pymust_far); no held-out image read.
import numpy as np, pandas as pd, torch
from scipy import ndimage
from sonoseg.serving.modelio import images_to_tensor
from sonoseg.serving import infer
from sonoseg.data.preprocess import load_cache
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.analysis.evaluate import dice
torch.set_num_threads(2)
R='results/quick/'
def load(s):
    if s in ('phantom_test','phantom_val'):
        part=s.split('_')[1]
        return load_cache(R+f'data/cache/inpaint/fold0/{part}.npz'), split.samples_of_part(R+'data/manifest.csv',R+'data/split.csv',part,0).set_index('sample_id')
    return load_cache(R+f'external/{s}/cache/inpaint/test.npz'), split.samples_of_part(R+f'external/{s}/manifest.csv',R+f'external/{s}/split.csv','test',0).set_index('sample_id')
rows=[]
nets=['unet','light_unet','lighter_unet_c128','lighter_unet_c1','fcn8s','deeplabv3plus_mobilenetv2','unext','malunet']
for s in ['phantom_val','phantom_test','pymust_far']:
    arr,samples=load(s); x=images_to_tensor(arr['images']).numpy()
    for net in nets:
        pr=infer.torch_predictor(R+f'runs/{net}/fold0/seed0/model.pt','cpu')
        p=np.concatenate([b for _,b in infer.in_batches(pr.run,x)])
        for sid,pp in zip(arr['sample_ids'],p):
            t=read_mask(samples.loc[str(sid)]['mask']).pixels
            if t.sum()==0: continue
            m=infer.probability_to_mask(pp,*t.shape,'area','keep_one')
            rows.append(dict(set=s,net=net,sid=str(sid),keep_one=dice(m,t),filled=dice(ndimage.binary_fill_holes(m),t)))
d=pd.DataFrame(rows); d['gain']=d.filled-d.keep_one
pd.set_option('display.width',200)
print(d.groupby(['set','net'])[['keep_one','filled','gain']].mean().round(3))
print(d.groupby('set')[['keep_one','filled','gain']].mean().round(4), (d.gain>0.001).groupby(d.set).sum())
