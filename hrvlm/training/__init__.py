"""Training: the one fine-tuning loop (:mod:`.train`), the mini world's CLIP pretraining (:mod:`.pretrain`),
what both share of how a run proceeds (:mod:`.schedule`: lr schedule, batch order, weight-decay rule) and their
resumable checkpoints with every RNG state (:mod:`.checkpoints`)."""
