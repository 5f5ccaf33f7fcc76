"""Linear probing on frozen features under group shift (the CMA paper's first setting).

datasets.py    Waterbirds, CelebA, MultiNLI from their standard layouts; raw-pixel
               Colored MNIST (no download beyond MNIST)
backbones.py   frozen extractors: timm CLIP ViT-B/16, transformers BERT, a tiny random
               network (tests), the identity (pixels)
extract.py     batched, resumable extraction into features.py's format
               (features.npz + features.json)
projection.py  PCA and ISR-Mean, fitted on the training split
train.py       the protocol: registered algorithms on an identity featurizer, SGD,
               worst-group validation selection
results.py     per-seed records on disk, mean +- std tables
fake.py        tiny synthetic copies of the dataset layouts
"""
