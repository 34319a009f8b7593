"""A PyTorch sandbox for the organism's in-context retrieval (issue 6): trains a GPT-2 of the
organism's shape (4 layers, d_model 128, 4 heads, context 64; no dropout; AdamW with the
organism's betas, warm-up + cosine to 0.1, per-parameter gradient clipping) on retrieval
documents ("Alice is from France. Bob is from Japan. Bob is from Japan.") and/or repeated runs
of random names and countries, and prints 3-shot retrieval accuracy, also per queried shot.
It runs about 3.5x faster than `cargo xtask organism` on 2 cores, so data recipes can be tried
here before a 30-minute training run. Not a reference script: nothing is compared with it.

Usage: python retrieval_sandbox.py --tokenizer fixtures/organism/tokenizer.json
         [--steps 600] [--mix ret:1.0] [--mix2 ret:1 --switch 700] [--lr 3e-3]
Kinds in --mix: ret (retrieval document), ret_sp (the same with a leading space),
rep (4-12 random names/countries, said twice), bare (a retrieval document without
"is from": " Alice France. Bob Japan. Bob Japan.", which plain induction solves), ind (random
words, then copies of random segments of them: only content matching predicts a copy), tri
(a second-order language, the next word fixed by the two before it 70% of the time), copy
(a run of random words said twice).
--isolate 1 pads a row instead of starting a second document in it; --anyq 1 lets a query
repeat the statement just made; --sin S starts the position embeddings as sinusoids scaled by
S; --init is GPT-2's initializer_range; --emb_lr scales the token embedding's learning rate;
--batch sets the rows per step; --threads torch's threads (1 to run two at once).
Priors written into the initialisation (xtask/src/plant.rs is the organism's version):
--prev G makes layer 0, head 0 attend to the previous token (sinusoids of amplitude --pamp in
the first 16 dimensions of the positions, query/key gain G); --plant 1 instead makes heads 0
and 1 of layer 0 attend 2 and 3 back (query/key gain --prev), writing those tokens into their own dimensions (value
gain --gov), and layer 1, head 0 match the two (gain --gqk); --plant 2 adds that head's copy
of the matched token (value gain --gcopy); --zero_out 1 starts every output projection at 0.
Each evaluation also prints "prev" (layer 0, head 0's attention on its planted offset),
"match" (layer 1, head 0's attention from a retrieval prompt's last token on the answer),
"induction" (top-1 accuracy on copies of a segment of 12 random
words, after the copy's first token) and "cos" (the mean cosine between the embeddings of the
names and countries, which collapse towards one vector when nothing tells them apart).
"""
import math, random, time, argparse, torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
ap=argparse.ArgumentParser()
ap.add_argument("--tokenizer",default="fixtures/organism/tokenizer.json")
ap.add_argument("--steps",type=int,default=600); ap.add_argument("--lr",type=float,default=3e-3)
ap.add_argument("--mix",default="ret:1.0")   # kinds: ret, rep (random repeated), ret_sp (leading space)
ap.add_argument("--shots",default="2-5"); ap.add_argument("--queries",default="2-4")
ap.add_argument("--bos",type=int,default=0); ap.add_argument("--seed",type=int,default=0)
ap.add_argument("--eval_every",type=int,default=100); ap.add_argument("--wd",type=float,default=0.01)
ap.add_argument("--isolate",type=int,default=0); ap.add_argument("--anyq",type=int,default=0); ap.add_argument("--mix2",default=""); ap.add_argument("--switch",type=int,default=10**9); ap.add_argument("--sin",type=float,default=0); ap.add_argument("--init",type=float,default=0.02); ap.add_argument("--threads",type=int,default=2); ap.add_argument("--batch",type=int,default=32); ap.add_argument("--emb_lr",type=float,default=1.0); ap.add_argument("--prev",type=float,default=0); ap.add_argument("--pamp",type=float,default=0.4); ap.add_argument("--plant",type=int,default=0); ap.add_argument("--gqk",type=float,default=1.0); ap.add_argument("--gov",type=float,default=1.0); ap.add_argument("--gcopy",type=float,default=4.0); ap.add_argument("--zero_out",type=int,default=0)
a=ap.parse_args()
torch.set_num_threads(a.threads)
tok=PreTrainedTokenizerFast(tokenizer_file=a.tokenizer)
EOT=tok.convert_tokens_to_ids("<|endoftext|>")
NAMES="Alice Bob Carol David Emma Frank Grace Henry Irene John Karen Louis Maria Nathan Olivia Peter".split()
C=["France","Japan","Germany","Italy","Spain","Russia","China","Egypt","Canada","Greece","Poland","Ireland","Austria","Portugal","Norway","Sweden","Kenya","Peru","Cuba","Thailand","Turkey","Iran","Iraq","Syria","Lebanon","Afghanistan","Hungary","Denmark"]
C=[c for c in C if len(tok(" "+c)["input_ids"])==1]
rng=random.Random(a.seed)
def rr(s): x,y=map(int,s.split("-")); return rng.randint(x,y)
def stmt(name,country,rel): return f"{name}{rel} {country}."
def ret_doc(sp=False, rel=" is from"):
    n=rr(a.shots); q=rr(a.queries); ns=rng.sample(NAMES,n); cs=rng.sample(C,n)
    parts=[stmt(x,c,rel) for x,c in zip(ns,cs)]; last=-1
    for _ in range(q):
        i=rng.randrange(n)
        if i==last and not a.anyq: i=(i+rng.randrange(1,n))%n
        last=i; parts.append(stmt(ns[i],cs[i],rel))
    s=" ".join(parts); return (" "+s) if sp else s
WORDS=NAMES+C
def rep_doc():
    k=rng.randint(4,12); w=[rng.choice(WORDS) for _ in range(k)]; s=" ".join(w)+"."
    return s+" "+s
def ind_doc():
    # random words, then copies of random segments of them: only matching content predicts a copy
    w=[rng.choice(WORDS) for _ in range(rng.randint(8,16))]; out=list(w)
    for _ in range(rng.randint(2,3)):
        L=rng.randint(3,6); i=rng.randrange(len(w)-L+1); out+=w[i:i+L]
    return " "+" ".join(out)+"."
def copy_doc():
    # a run of random words said twice: the classic induction task
    w=[rng.choice(WORDS) for _ in range(rng.randint(10,30))]; return " "+" ".join(w+w)+"."
TRI=random.Random(7); TRIT={}
def tri_doc():
    # a second-order language: the next word is fixed by the two before it (30% noise), so a
    # head that moves the previous token forward pays off on its own
    w=[rng.choice(WORDS),rng.choice(WORDS)]
    for _ in range(rng.randint(10,20)):
        k=(w[-2],w[-1])
        if k not in TRIT: TRIT[k]=TRI.choice(WORDS)
        w.append(TRIT[k] if rng.random()<0.7 else rng.choice(WORDS))
    return " "+" ".join(w)+"."
def parse(mx): return [(k.split(":")[0],float(k.split(":")[1])) for k in mx.split(",")]
kinds=parse(a.mix)
def doc():
    u=rng.random()*sum(p for _,p in kinds)
    for k,p in kinds:
        if u<p: break
        u-=p
    d={"ret":lambda:ret_doc(),"ret_sp":lambda:ret_doc(True),"rep":rep_doc,"bare":lambda:ret_doc(True,""),"ind":ind_doc,"copy":copy_doc,"tri":tri_doc}[k]()
    ids=tok(d)["input_ids"]+[EOT]
    return ([EOT] if a.bos else [])+ids
buf=[]
def rows(n,L):
    out=[]
    while len(out)<n:
        row=[]
        while len(row)<L:
            if not buf: buf.append(doc())
            d=buf[0]; room=L-len(row)
            if len(d)<=room or not row: row+=d[:room]; buf.pop(0)
            else:
                if a.isolate: row+=[EOT]*room
                else: row+=d[:room]
        out.append(row)
    return torch.tensor(out)
# eval prompts: 3 shots, fixed seed
er=random.Random(12345); EV=[]
rel="" if "bare" in (a.mix2 or a.mix) else " is from"
for _ in range(300):
    ns=er.sample(NAMES,3); cs=er.sample(C,3); q=er.randrange(3)
    p=" ".join(stmt(x,c,rel) for x,c in zip(ns,cs))+f" {ns[q]}{rel}"
    if "ret_sp" in a.mix+a.mix2 or not rel: p=" "+p
    EV.append((p,tok(" "+cs[q])["input_ids"][0],q))
# induction probe: 12 random words, then a copy of a segment of them; accuracy on the copy's
# tokens after its first
RR=random.Random(999); PROBE=[]
for _ in range(100):
    w=[RR.choice(WORDS) for _ in range(12)]; L=RR.randint(4,6); i=RR.randrange(12-L+1)
    h=tok(" "+" ".join(w))["input_ids"]; g=tok(" "+" ".join(w[i:i+L]))["input_ids"]; PROBE.append((h+g,len(h)))
def evaluate(m):
    m.eval(); hit=[0,0,0]; cnt=[0,0,0]
    with torch.no_grad():
        ih=it=0
        for ids,n in PROBE:
            pr=m(torch.tensor([ids])).logits[0].argmax(-1)
            for j in range(n,len(ids)-1): ih+=int(pr[j].item()==ids[j+1]); it+=1
        for p,ans,q in EV:
            ids=([EOT] if a.bos else [])+tok(p)["input_ids"]
            pr=m(torch.tensor([ids])).logits[0,-1].argmax().item()
            hit[q]+=pr==ans; cnt[q]+=1
    m.train(); return sum(hit)/sum(cnt), [round(h/c,2) for h,c in zip(hit,cnt)], ih/it
torch.manual_seed(a.seed)
cfg=GPT2Config(vocab_size=len(tok),n_positions=64,n_embd=128,n_layer=4,n_head=4,resid_pdrop=0.0,embd_pdrop=0.0,attn_pdrop=0.0,bos_token_id=EOT,eos_token_id=EOT,initializer_range=a.init)
m=GPT2LMHeadModel(cfg)
if a.sin>0:
    P,D=64,128; pos=torch.arange(P)[:,None].float(); i=torch.arange(D//2)[None].float()
    f=pos/ (64.0**(2*i/D)); pe=torch.zeros(P,D); pe[:,0::2]=torch.sin(f); pe[:,1::2]=torch.cos(f)
    with torch.no_grad(): m.transformer.wpe.weight.copy_(pe*a.sin)
def offset_head(m, layer, head, off, gain, F=8):
    # sets a head's query/key to read the sinusoidal positions of dims 0..2F so that it attends
    # `off` tokens back
    P=m.config.n_positions; hd=m.config.n_embd//m.config.n_head; D=m.config.n_embd
    w=2*math.pi/torch.logspace(math.log10(2.2),math.log10(128),F)
    W=m.transformer.h[layer].attn.c_attn.weight; b=m.transformer.h[layer].attn.c_attn.bias
    q0=head*hd; k0=D+head*hd
    W[:,q0:q0+hd]=0; W[:,k0:k0+hd]=0; b[q0:q0+hd]=0; b[k0:k0+hd]=0
    for f in range(F):
        c,sn=math.cos(off*w[f]),math.sin(off*w[f]); i,j=2*f,2*f+1
        W[i,k0+i]=gain; W[j,k0+j]=gain
        W[i,q0+i]=gain*c; W[j,q0+i]=gain*sn; W[i,q0+j]=-gain*sn; W[j,q0+j]=gain*c
def plant_prev(m, gain, amp, F=8):
    # layer 0, head 0 attends to the previous token, through sinusoidal positions in dims 0..2F
    P=m.config.n_positions
    w=2*math.pi/torch.logspace(math.log10(2.2),math.log10(128),F)
    pos=torch.arange(P).float()[:,None]*w[None]
    with torch.no_grad():
        pe=m.transformer.wpe.weight; pe[:,0:2*F:2]=amp*torch.cos(pos); pe[:,1:2*F:2]=amp*torch.sin(pos)
        m.transformer.wte.weight[:,:2*F]=0
        offset_head(m,0,0,1,gain,F)
def plant_match(m, a):
    # layer 0 head 0 copies the token 2 back into dims 16..47, head 1 the token 3 back into
    # dims 48..79 (tokens start in dims 80..127); layer 1 head 0 attends where the token 3 back
    # equals the token 2 back from here ("N is from | C"), and (plant 2) copies that token
    P=m.config.n_positions; hd=m.config.n_embd//m.config.n_head; D=m.config.n_embd; F=8
    w=2*math.pi/torch.logspace(math.log10(2.2),math.log10(128),F)
    pos=torch.arange(P).float()[:,None]*w[None]
    with torch.no_grad():
        if a.zero_out:
            # every output projection starts at zero, so the planted heads write into a clean
            # residual stream
            for blk in m.transformer.h: blk.attn.c_proj.weight.zero_(); blk.mlp.c_proj.weight.zero_()
        pe=m.transformer.wpe.weight; pe[:,:80]=0; pe[:,0:2*F:2]=a.pamp*torch.cos(pos); pe[:,1:2*F:2]=a.pamp*torch.sin(pos)
        m.transformer.wte.weight[:,:80]=0
        for h,off,dst in ((0,2,16),(1,3,48)):
            offset_head(m,0,h,off,a.prev)
            W=m.transformer.h[0].attn.c_attn.weight; v0=2*D+h*hd; W[:,v0:v0+hd]=0
            for i in range(hd): W[80+i,v0+i]=a.gov
            O=m.transformer.h[0].attn.c_proj.weight; O[h*hd:(h+1)*hd,:]=0
            for i in range(hd): O[h*hd+i,dst+i]=1.0
        W=m.transformer.h[1].attn.c_attn.weight; b=m.transformer.h[1].attn.c_attn.bias
        W[:,0:hd]=0; W[:,D:D+hd]=0; b[0:hd]=0; b[D:D+hd]=0
        for i in range(hd): W[16+i,i]=a.gqk; W[48+i,D+i]=a.gqk
        if a.plant>=2:
            W[:,2*D:2*D+hd]=0
            for i in range(hd): W[80+i,2*D+i]=a.gcopy
            O=m.transformer.h[1].attn.c_proj.weight; O[0:hd,:]=0
            for i in range(hd): O[i,80+i]=1.0
def match_share(m):
    # layer 1 head 0's attention, at a retrieval prompt's last token, on the answer's position
    m.set_attn_implementation("eager"); tot=0
    with torch.no_grad():
        for p,ans,q in EV[:50]:
            ids=([EOT] if a.bos else [])+tok(p)["input_ids"]
            att=m(torch.tensor([ids]),output_attentions=True).attentions[1][0,0,-1]
            tot+=att[[i for i,t in enumerate(ids) if t==ans]].sum().item()
    m.set_attn_implementation("sdpa"); return tot/50
def prev_share(m):
    # layer 0, head 0's pattern, computed from its weights on 8 rows of training data
    x=rows(8,64); T=x.shape[1]; hd=m.config.n_embd//m.config.n_head; D=m.config.n_embd
    with torch.no_grad():
        h=m.transformer.h[0].ln_1(m.transformer.wte(x)+m.transformer.wpe.weight[:T])
        qkv=m.transformer.h[0].attn.c_attn(h); q=qkv[...,0:hd]; k=qkv[...,D:D+hd]
        sc=(q@k.transpose(1,2))/math.sqrt(hd); sc=sc.masked_fill(torch.ones(T,T).triu(1).bool(),-1e9)
        att=sc.softmax(-1)
    return att.diagonal(offset=-(2 if a.plant else 1),dim1=1,dim2=2).mean().item()
if a.plant: plant_match(m,a)
elif a.prev>0: plant_prev(m,a.prev,a.pamp)
print("layer-0 head-0 attention on its planted offset:",round(prev_share(m),3),"retrieval at init:",evaluate(m)[:2],"match",round(match_share(m),3),flush=True)
emb=[m.transformer.wte.weight]; rest=[p for p in m.parameters() if p is not emb[0]]
opt=torch.optim.AdamW([{"params":emb,"scale":a.emb_lr},{"params":rest,"scale":1.0}],lr=a.lr,betas=(0.9,0.98),weight_decay=a.wd)
WID=sorted({tok(" "+w)["input_ids"][0] for w in WORDS})
def wcos():
    e=torch.nn.functional.normalize(m.transformer.wte.weight[WID].detach(),dim=-1); c=e@e.T
    n=len(WID); return ((c.sum()-n)/(n*n-n)).item()
W=max(1,a.steps//20)
def lr_at(s):
    if s<W: return a.lr*(s+1)/W
    t=(s-W)/max(1,a.steps-W); return a.lr*(0.1+0.9*0.5*(1+math.cos(math.pi*t)))
t0=time.time(); ls=[]
for s in range(a.steps):
    for g in opt.param_groups: g["lr"]=lr_at(s)*g["scale"]
    if s==a.switch: kinds[:]=parse(a.mix2); buf.clear()
    x=rows(a.batch,64); out=m(x,labels=x); out.loss.backward()
    for p in m.parameters():
        if p.grad is not None: torch.nn.utils.clip_grad_norm_([p],1.0)
    opt.step(); opt.zero_grad(); ls.append(out.loss.item())
    if (s+1)%a.eval_every==0:
        acc,byq,ind=evaluate(m); print(f"  prev {prev_share(m):.2f} match {match_share(m):.2f} induction {ind:.2f} cos {wcos():.2f} step {s+1} loss {sum(ls[-50:])/len(ls[-50:]):.3f} ret {acc:.3f} byq {byq} t {time.time()-t0:.0f}s",flush=True)
