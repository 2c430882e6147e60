# AdaBN probe: BatchNorm statistics re-estimated on the development external set's own images (no labels).
import numpy as np, pandas as pd, torch, cv2
from sonoseg.serving.modelio import load_model, images_to_tensor
from sonoseg.serving import infer
from sonoseg.serving.probability_model import ProbabilityModel
from sonoseg.training.bn_recalibration import recalibrate_batchnorm
from sonoseg.data.preprocess import load_cache
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.analysis.evaluate import dice
torch.set_num_threads(2)
R='results/quick/'
def load(setname):
    if setname=='phantom_test':
        return load_cache(R+'data/cache/inpaint/fold0/test.npz'), split.samples_of_part(R+'data/manifest.csv',R+'data/split.csv','test',0).set_index('sample_id')
    return load_cache(R+f'external/{setname}/cache/inpaint/test.npz'), split.samples_of_part(R+f'external/{setname}/manifest.csv',R+f'external/{setname}/split.csv','test',0).set_index('sample_id')
rows=[]
for s in ['phantom_test','pymust_far']:
    arr,samples=load(s); x=images_to_tensor(arr['images'])
    for net in ['unet','light_unet','lighter_unet_c128','lighter_unet_c1']:
        for mode in ['plain','adabn']:
            model,saved=load_model(R+f'runs/{net}/fold0/seed0/model.pt','cpu')
            w=ProbabilityModel(model,saved.get('normalization')).eval()
            if mode=='adabn':
                recalibrate_batchnorm(model, x, 8, forward=lambda m,b: w(b))
                w.eval()
            with torch.no_grad(): p=w(x).numpy()[:,0]
            for sid,pp in zip(arr['sample_ids'],p):
                t=read_mask(samples.loc[str(sid)]['mask']).pixels
                if t.sum()==0: continue
                rows.append(dict(set=s,net=net,mode=mode,sid=str(sid),dice=dice(infer.probability_to_mask(pp,*t.shape,'area','keep_one'),t)))
d=pd.DataFrame(rows)
print(d.pivot_table(index=['set','net'],columns='mode',values='dice').round(3))
print(d.pivot_table(index=['set'],columns='mode',values='dice').round(3))
