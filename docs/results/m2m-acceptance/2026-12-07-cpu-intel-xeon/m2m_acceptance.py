import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..'))  # the repository
from core import m2m, stages
from core.config import TrainConfig
from core.train import train
base = dict(dataset="digits", model="small_cnn", epochs=10, milestones=[8], drw_epoch=8, warmup_epochs=1,
            imbalance="long_tailed", ratio=10.0, device="cpu")
cfg = TrainConfig.from_dict(dict(base, method="m2m"))
ckpt, metrics = stages.train_stage("m2m_generator", cfg)
stages.write_checkpoint(stages.checkpoint_bytes(ckpt), os.path.join(os.environ.get("TMPDIR", "/tmp"), "g_digits.pt"))
print("g", {k: round(v, 4) for k, v in metrics.items() if k in ("g_test_acc",)})
counts = {"slots": 0, "accepted": 0, "confident": 0}
orig = m2m.translate
def spy(*a, **k):
    out = orig(*a, **k)
    counts["slots"] += int(out.slots.sum()); counts["accepted"] += int(out.accepted.sum())
    counts["confident"] += int((out.slots & (out.confidence >= 0.9)).sum())
    return out
m2m.translate = spy
for seed in (0, 1):
    r = train(dict(base, method="m2m", seed=seed, m2m_generator=os.path.join(os.environ.get("TMPDIR", "/tmp"), "g_digits.pt")))
    print(seed, round(r["test_acc"], 4), dict(counts))
