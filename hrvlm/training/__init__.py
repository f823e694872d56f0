"""Training: the one fine-tuning loop (:mod:`.train`), the mini world's CLIP pretraining (:mod:`.pretrain`),
resumable checkpoints (:mod:`.checkpoints`)."""
