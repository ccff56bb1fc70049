"""LLaVA training (upstream module paths): `llava.train.train` (arguments, data, `train()`),
`llava.train.llava_trainer` (LLaVATrainer), `llava.train.train_mem` (entry point with flash attention when
available), `llava.train.make_tiny_dataset` (a generated toy data set for tests and smoke runs)."""
