"""Model packaging: directory to ModelPack artifact and back.

* :mod:`.pack`: a directory → manifest, config and layers (metadata from
  :mod:`.metadata`, parts from :mod:`.split`, Hugging Face snapshots via :mod:`.hf`).
* :mod:`.unpack`: an artifact → files, whoever produced it (:mod:`.producers`,
  archives through :mod:`.archive`).
* :mod:`.tensors`: every tensor of a local or remote model from its headers;
  :mod:`.diff`: what changed between two versions.
* :mod:`.formats`: header parsers (safetensors, GGUF, ONNX, ...); nothing is unpickled.
* :mod:`.annotations`: modelreg's own media types and annotation keys.
"""
