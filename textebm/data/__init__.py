"""Data: corpora (files, the Hub, named benchmarks), tokenizers, batching, image sets, and the data modules the
training loop uses (:mod:`.modules`)."""
from .batching import Batch, BucketBatcher, pad_batch
from .corpus import Corpus, CorpusError, read_lines
from .registry import CORPORA, load_corpus
from .specials import BOS, EOS, PAD, UNK
from .tokenizers import build_tokenizer, encode_sentences, load_tokenizer
from .vocab import WordVocab

__all__ = ["Batch", "BucketBatcher", "pad_batch", "CORPORA", "Corpus", "CorpusError", "load_corpus", "read_lines",
           "BOS", "EOS", "PAD", "UNK", "WordVocab", "load_tokenizer", "build_tokenizer", "encode_sentences"]
