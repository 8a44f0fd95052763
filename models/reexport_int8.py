"""Re-export the int8 model of run a160_b5 from its best checkpoint with N calibration photos.

What produced the shipped model:  python models/reexport_int8.py 800 runs/a160_b5_c800
(then metrics and training settings were added to the .json by hand from the reports).
Kept as the exact record; see models/README.md.
"""
import sys, json, numpy as np
from pathlib import Path
from bin_agent.training.train import TrainConfig, build_models, convert_int8, model_metadata, write_model
from bin_agent.training import dataset as ds
from bin_agent.training.evaluate import evaluate_items
W="/work/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
run=Path("runs/a160_b5"); n=int(sys.argv[1]); out=Path(sys.argv[2])
cfg=TrainConfig(datasets=[Path("/work/shared/data/trashnet")], out=out, split=Path("models/trashnet_split.json"), weights=W, input_size=160, cut_layer="block_5_add", dropout=0.3, calibration=n)
full=build_models(cfg)[0]; full.load_weights(run/"best.weights.h5")
doc=ds.read_split(cfg.split); items=ds.list_dataset(cfg.datasets[0]); entry=ds.split_for(doc, cfg.datasets[0])
train=ds.select(items, entry, "train"); val=ds.select(items, entry, "val")
rng=np.random.default_rng(cfg.seed); idx=rng.permutation(len(train))[:n]
calib=[ds.eval_pixels(train[i].path, cfg.spec) for i in idx]
b=convert_int8(full, calib)
meta=json.loads((run/"trashnet_mobilenetv2_int8.json").read_text())
new=model_metadata(cfg, b, cfg.name, {"trained_on": meta["trained_on"], "calibration": {"photos": n, "from": "training subset, fit_to_input"}})
write_model(out/"trashnet_mobilenetv2_int8.tflite", b, new)
r=evaluate_items(out/"trashnet_mobilenetv2_int8.tflite", val)
print("calib", n, "val int8", r["accuracy"], r["macro_f1"], r["per_class"]["trash"]["recall"], r["input_quantization"])
