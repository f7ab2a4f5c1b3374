"""The special tokens and their ids: the one place where they live (every tokenizer uses these).

``<pad>`` = 0, ``<unk>`` = 1, ``<s>`` = 2, ``</s>`` = 3; a sentence is framed as ``<s> tokens </s>``.
"""
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
