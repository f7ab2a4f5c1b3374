"""Corpora, tokenizers and batching for text."""
from .batching import BucketBatcher, pad_batch
from .corpus import CORPORA, Corpus, CorpusError, load_corpus, read_lines
from .vocab import BOS, EOS, PAD, UNK, WordVocab, load_tokenizer

__all__ = ["BucketBatcher", "pad_batch", "CORPORA", "Corpus", "CorpusError", "load_corpus", "read_lines",
           "BOS", "EOS", "PAD", "UNK", "WordVocab", "load_tokenizer"]
