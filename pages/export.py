"""Export page: download the model bundle, the weights alone, or the config; how to load them."""

import streamlit as st

from core.config import TrainConfig
from core.export.bundle import export_zip
from pages._ui import init_session, run_picker

init_session()
st.header("6 · Export")
run = run_picker()
if run is None:
    st.stop()
bundle = run.bundle_dir
if not (bundle / "model.safetensors").exists():
    st.warning("This run has no trained model to export.")
    st.stop()

st.write("The bundle is a timm / Hugging Face model folder: `config.json` (architecture, class names, "
         "preprocessing), `model.safetensors`, plus the training `config.yaml`, `summary.json` and a README.")
c1, c2, c3 = st.columns(3)
# Callables: the files are read only when clicked, so reruns of this page stay cheap.
c1.download_button("Download model bundle (.zip)", data=lambda: export_zip(run).read_bytes(),
                   file_name=f"{run.run_id}-model.zip", mime="application/zip", key="dl_bundle",
                   type="primary", on_click="ignore")
c2.download_button("Weights only (.safetensors)", data=lambda: (bundle / "model.safetensors").read_bytes(),
                   file_name=f"{run.run_id}.safetensors", mime="application/octet-stream", key="dl_weights",
                   on_click="ignore")
c3.download_button("Training config (.yaml)", data=lambda: TrainConfig.load(run.config).portable().to_yaml(),
                   file_name="config.yaml",
                   mime="application/x-yaml", key="dl_config", on_click="ignore")

st.subheader("Load it elsewhere")
st.code(f'''import timm, torch
from PIL import Image, ImageOps

model = timm.create_model("local-dir:{run.run_id}", pretrained=True).eval()  # the unzipped folder
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
img = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")
probs = model(transform(img).unsqueeze(0)).softmax(-1)[0]
print(model.pretrained_cfg["label_names"][int(probs.argmax())], float(probs.max()))''', language="python")
st.code(f"python -m core predict {run.run_id}-model.zip photo.jpg      # or from the command line",
        language="bash")
