"""A colour x shape world of 32x32 images for a tiny CLIP that really knows its classes (CPU-sized).

- vocab.py: 10 colours x 10 shapes, the 30 pairs pretraining never shows, the 50 downstream classes
  (base: 5 colours x 5 shapes, new: the other 5 x 5, so base and new share no word), the captions;
- render.py: vectorised torch rendering of the clean pretraining domain and the noisy downstream domain;
- dataset.py: the downstream dataset in a CoOp layout (Dassl name ToyWorld, configs/datasets/toyworld.yaml).

    python -m tools.toyworld --root DATA_ROOT [--seed 0]
"""
