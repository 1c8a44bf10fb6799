"""`train`: the ScaleFace scale head, the PFE head and the pair classifier, trained into checkpoints `extract`
loads unchanged (docs/train.md). Imports torch, extract, facedata, featurestore; nothing imports it."""
