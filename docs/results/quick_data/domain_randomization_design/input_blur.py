# Input blur probe: the 32-px input low-passed before the network (development sets only).
# Input blur probe at inference (development sets only): the 32-px input low-passed before the network.
import numpy as np, pandas as pd, torch, cv2
from sonoseg.serving import infer
from sonoseg.data import split
from sonoseg.data.imageio import read_mask, read_image
from sonoseg.analysis.evaluate import dice
torch.set_num_threads(2)
R='results/quick/'
def samples(s):
    if s.startswith('phantom'):
        part=s.split('_')[1]
        return split.samples_of_part(R+'data/manifest.csv',R+'data/split.csv',part,0)
    return split.samples_of_part(R+f'external/{s}/manifest.csv',R+f'external/{s}/split.csv','test',0)
SIGMAS=[0,0.5,0.75,1.0]
rows=[]
for s in ['phantom_val','phantom_test','pymust_far']:
    sm=samples(s)
    for net in ['unet','light_unet','lighter_unet_c128','lighter_unet_c1']:
        p=infer.torch_predictor(R+f'runs/{net}/fold0/seed0/model.pt','cpu')
        for _,row in sm.iterrows():
            t=read_mask(row['mask']).pixels
            if t.sum()==0: continue
            x=p.prepare(read_image(row['image']).pixels)
            out=dict(set=s,net=net,sid=row['sample_id'])
            for sg in SIGMAS:
                xb=x if sg==0 else np.stack([cv2.GaussianBlur(c,(0,0),sg,borderType=cv2.BORDER_REPLICATE) for c in x[0]])[None]
                out[f'blur{sg}']=dice(infer.probability_to_mask(p.run(xb.astype(np.float32))[0],*t.shape,'area','keep_one'),t)
            rows.append(out)
d=pd.DataFrame(rows); cols=[c for c in d.columns if c.startswith('blur')]
pd.set_option('display.width',250)
print(d.groupby(['set','net'])[cols].mean().round(3)); print(d.groupby('set')[cols].mean().round(3))
