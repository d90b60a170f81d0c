"""Merging across vocabularies: the merged tokenizer, row layouts of embedding/head tensors, chat templates."""
