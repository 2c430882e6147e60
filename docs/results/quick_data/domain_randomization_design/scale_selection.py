# The scale-selection rule as designed (confidence = mean probability inside the predicted lesion; sizes from the 32-px cache by area pooling), every network's seed-0 model of the fp32 quick study at 94cdc97; development sets only.
# Scale chosen per image by confidence, the other sizes made from the 32-px cache (torch area pooling), every network.
import numpy as np, pandas as pd, torch, torch.nn.functional as F
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor
from sonoseg.data.preprocess import load_cache
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.analysis.evaluate import dice
torch.set_num_threads(2)
R='results/quick/'
def load(s):
    if s.startswith('phantom'):
        part=s.split('_')[1]
        return load_cache(R+f'data/cache/inpaint/fold0/{part}.npz'), split.samples_of_part(R+'data/manifest.csv',R+'data/split.csv',part,0).set_index('sample_id')
    return load_cache(R+f'external/{s}/cache/inpaint/test.npz'), split.samples_of_part(R+f'external/{s}/manifest.csv',R+f'external/{s}/split.csv','test',0).set_index('sample_id')
SIZES=[32,28,24,20]
rows=[]
for s in ['phantom_val','phantom_test','pymust_far']:
    arr,sm=load(s); x=images_to_tensor(arr['images'])
    for net in ['unet','light_unet','lighter_unet_c128','lighter_unet_c1','fcn8s','deeplabv3plus_mobilenetv2','unext','malunet']:
        pr=infer.torch_predictor(R+f'runs/{net}/fold0/seed0/model.pt','cpu')
        probs={}
        for z in SIZES:
            xz=x if z==32 else F.interpolate(x,size=(z,z),mode='area')
            try:
                p=torch.from_numpy(pr.run(xz.numpy()))[:,None]
            except Exception as e:
                print(net,z,'fails',type(e).__name__,str(e)[:80]); probs=None; break
            probs[z]=(p, F.interpolate(p,size=(32,32),mode='bilinear',align_corners=False)[:,0].numpy())
        if probs is None: continue
        conf={z:[(q[q>0.5].mean().item() if (q>0.5).any() else 0.0) for q in probs[z][0][:,0]] for z in SIZES}
        for i,sid in enumerate(arr['sample_ids']):
            t=read_mask(sm.loc[str(sid)]['mask']).pixels
            if t.sum()==0: continue
            out=dict(set=s,net=net)
            for z in SIZES: out[f'd{z}']=dice(infer.probability_to_mask(probs[z][1][i],*t.shape,'area','keep_one'),t)
            best=max(SIZES,key=lambda z: conf[z][i]); out['pick']=out[f'd{best}']
            rows.append(out)
d=pd.DataFrame(rows)
pd.set_option('display.width',250)
print(d.groupby(['set','net']).mean().round(3).to_string())
fam=d[d.net.isin(['unet','light_unet','lighter_unet_c128','lighter_unet_c1'])]
print(fam.groupby('set')[['d32','pick']].mean().round(3))
