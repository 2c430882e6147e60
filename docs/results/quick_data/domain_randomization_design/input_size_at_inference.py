# Multi-scale inference probe: the seed-0 family models of the fp32 quick study fed the images resized to other input sizes (development sets only).
# Multi-scale inference probe on the development sets (phantom val/test, pymust_far); no held-out image read.
import numpy as np, pandas as pd, torch, cv2, itertools
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
SIZES=[32,28,24,20,48]
rows=[]
for s in ['phantom_val','phantom_test','pymust_far']:
    sm=samples(s)
    for net in ['unet','light_unet','lighter_unet_c128','lighter_unet_c1']:
        preds={z: infer.torch_predictor(R+f'runs/{net}/fold0/seed0/model.pt','cpu',size=z) for z in SIZES}
        for _,row in sm.iterrows():
            t=read_mask(row['mask']).pixels
            if t.sum()==0: continue
            rgb=read_image(row['image']).pixels if hasattr(read_image(row['image']),'pixels') else read_image(row['image'])
            probs={}
            for z,p in preds.items():
                pr=p.run(p.prepare(rgb))[0]
                probs[z]=cv2.resize(pr,(64,64),interpolation=cv2.INTER_LINEAR)
            out=dict(set=s,net=net,sid=row['sample_id'])
            for k in (1,):
                for combo in itertools.combinations(SIZES,k):
                    avg=np.mean([probs[z] for z in combo],0)
                    out['+'.join(map(str,combo))]=dice(infer.probability_to_mask(avg,*t.shape,'area','keep_one'),t)
            rows.append(out)
d=pd.DataFrame(rows)
cols=[c for c in d.columns if c[0].isdigit()]
pd.set_option('display.width',250)
print(d.groupby(['set','net'])[cols].mean().round(3))
print(d.groupby('set')[cols].mean().round(3))
