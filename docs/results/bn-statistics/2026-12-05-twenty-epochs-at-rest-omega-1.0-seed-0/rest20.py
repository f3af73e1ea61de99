"""Twenty more epochs at rest, trained the authors' way, against replays of the final weights.

The omega 1.0, seed 0 CPU cell's final state (epoch 200, lr 1e-5) trains 20 more epochs at the schedule's
last learning rate with the authors' clean forward pass (clean_forward: true; it changes no weight), and
is evaluated after each, as the authors' trainers evaluate every epoch. Then the weights those 20 epochs
leave and the final weights are replayed on the same 3 draws each way. If 20 epochs at 1e-5 move the
weights too little to matter, (a) the 20 evaluations look like the 20 "clean, then mixed" replays of the
final weights (docs/results/bn-statistics/2026-12-04-best-of-20-omega-1.0-seed-0/), and (b) the two sets
of weights evaluate alike on the same replay draws.
usage: python rest20.py STATE.pt OUT.json [EPOCHS]
"""
import dataclasses
import json
import sys
import time

import torch

sys.path.insert(0, ".")
from bench.replays import REPLAYS  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.train import (batch_bounds, draw_epoch, epoch_weights, evaluate, make_batch, restore,  # noqa: E402
                        set_learning_rate, set_up, train_epoch)

state = torch.load(sys.argv[1], weights_only=True)
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
cfg = dataclasses.replace(TrainConfig.from_dict(state["configs"][0]), clean_forward=True, compile=False)
pack = set_up([cfg])
# clean_forward is no field a state resumes under (it is one of the setting's): it changes no weight, only
# BatchNorm's statistics, so the state is loaded as this config's
state = {**state, "configs": [cfg.to_dict()]}
restore(pack, state)
end = state["epoch"]
rest_draws = [draw_epoch(pack, end) for _ in range(epochs)]
replay_draws = [draw_epoch(pack, end) for _ in range(3)]
weights = epoch_weights(pack, end)
out = {"epochs": epochs, "lr": set_learning_rate(pack, end - 1), "final": evaluate(pack, [0])[0], "rest": []}
started = time.time()
for e, draws in enumerate(rest_draws):
    set_learning_rate(pack, end - 1)
    train_epoch(pack, draws, weights)
    out["rest"].append({"epoch": end + e + 1, **evaluate(pack, [0])[0]})
    print(f"epoch {end + e + 1}: test_acc {out['rest'][-1]['test_acc']:.4f} ({time.time() - started:.0f} s)", flush=True)
rested = {"net": {k: v.clone() for k, v in pack.net.state_dict().items()}}
final_params = {k: v for k, v in state["net"].items() if "running" not in k and "num_batches" not in k}
diff = sum((pack.net.state_dict()[k].double() - v.double()).pow(2).sum() for k, v in final_params.items()) ** 0.5
norm = sum(v.double().pow(2).sum() for v in final_params.values()) ** 0.5
out["relative_weight_change"] = float(diff / norm)
for label, net in (("final weights", state["net"]), ("after the rest epochs", rested["net"])):
    out[label] = {}
    for name in ("mixed", "clean, then mixed"):
        out[label][name] = []
        for draws in replay_draws:
            pack.net.load_state_dict(net)
            for step, (start, stop) in enumerate(batch_bounds(draws.order.shape[1], cfg.batch_size)):
                REPLAYS[name](pack, make_batch(pack, draws, step, start, stop), weights)
            out[label][name].append(evaluate(pack, [0])[0])
        print(label, name, [round(100 * m["test_acc"], 2) for m in out[label][name]], flush=True)
with open(sys.argv[2], "w") as f:
    json.dump(out, f, indent=1)
