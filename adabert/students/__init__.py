"""Students: the searched student built from `arch.json` and its KD finetune (`student`, `finetune`), and the
classic baselines' students (BiLSTM, a subset of the teacher's layers) in `baselines`."""
