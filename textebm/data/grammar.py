"""A small probabilistic context-free grammar with exactly computable sentence probabilities.

The bundled corpus in ``data/grammar/`` is sampled from the shipped grammar, :func:`default_grammar` (its rules are
the package data file ``grammar_default.json``, :data:`DEFAULT_GRAMMAR_FILE`).  Because the
generating distribution is known, the exact negative log-likelihood of any sentence can be
computed (:meth:`PCFG.log_prob`, the inside algorithm summed over all derivations) and used as
the "true entropy" reference that language models trained on the corpus are compared against.

The shipped grammar
-------------------
Nonterminals are UPPER_CASE, terminals are lowercase words or punctuation; a symbol is a nonterminal exactly when
it has rules.  Recursion is bounded by construction: the symbols ending in "1" (CL1, VP1_*, SUBJ1_*, OBJ1) are the
"depth 1" copies that cannot embed anything further, so the grammar is acyclic and the longest sentence has a fixed
length (29 tokens, see :meth:`PCFG.max_length`).  Verb forms: *_SG is 3rd person singular present ("sees"), *_PL is
the plural present, which doubles as the bare form after auxiliaries ("see"), *_PAST is the past tense ("saw").
Subjects agree in number with present-tense verbs, also across a relative clause ("the dog that the cats chase
sleeps").  Prepositional phrases and adverbs after an object are attachment-ambiguous (to the object's noun phrase
or relative clause, or to the verb phrase), so some sentences have several derivations; ``log_prob`` sums over all
of them.  Closed word classes have explicit probabilities; the open classes (:data:`OPEN_CLASSES`) list their words
from most to least frequent with Zipf-like probabilities, rank r (from 0) proportional to 1 / (r + 2), and all
forms of one noun or verb share its probability within their class.

Probability semantics
---------------------
``p(x)`` is the probability that a derivation started at the start symbol yields exactly the
token sequence ``x``.  A sentence ends when its derivation ends, so there is no separate
end-of-sentence probability: the sum of ``p(x)`` over all strings is 1.  When comparing with a
left-to-right model that predicts an end-of-sentence event, that event is free under the
grammar, which is why perplexities are reported per token *including* one end-of-sentence
event per sentence: ``exp(total_nll / (n_tokens + n_sentences))``.

Regenerate the bundled files with :mod:`textebm.data.grammar_corpus`::

    python -m textebm.data.grammar_corpus --out data/grammar --seed 0

Grammars read from files are checked before they are used (:meth:`PCFG.load_json`): a regular file of at most
:data:`MAX_GRAMMAR_BYTES`, JSON nested at most a few levels, at most :data:`MAX_RULE_SYMBOLS` symbols over all
rules and :data:`MAX_RHS` per rule; symbols are non-empty and whitespace-free; probabilities are finite,
non-negative and sum to 1 per left-hand side; the start symbol has rules; every nonterminal the start symbol can
reach derives some finite sentence (termination); unary rules never form a cycle that is never left, and the
symbols on unary cycles are at most :data:`MAX_UNARY_CYCLE_SYMBOLS` (their closure is a dense matrix inverse).

This module depends on the Python standard library, numpy and :mod:`textebm.files` (itself standard library).
"""

from __future__ import annotations

import bisect
import json
import math
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "PCFG",
    "DEFAULT_GRAMMAR",
    "DEFAULT_GRAMMAR_FILE",
    "OPEN_CLASSES",
    "DEFAULT_START",
    "DEFAULT_COUNTS",
    "SPLITS",
    "default_grammar",
    "default_rules",
    "sample_splits",
    "split_stats",
    "read_split",
]

RHS = Union[str, Sequence[str]]
Rules = Mapping[str, Sequence[Tuple[float, RHS]]]

SPLITS = ("train", "valid", "test")
DEFAULT_COUNTS = {"train": 10_000, "valid": 1_000, "test": 1_000}
DEFAULT_START = "S"

_PROB_TOL = 1e-9
#: bounds on a grammar (see the module docstring)
MAX_GRAMMAR_BYTES = 16 << 20
MAX_RULE_SYMBOLS = 1_000_000
MAX_RHS = 1024
MAX_UNARY_CYCLE_SYMBOLS = 2000
#: a grammar file is {"start": .., "rules": {lhs: [[p, rhs], ...]}} with rhs a string or a list of strings
_GRAMMAR_DEPTH = 5

#: the shipped grammar's rules, in :meth:`PCFG.to_json`'s format (read by :func:`default_grammar`)
DEFAULT_GRAMMAR_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grammar_default.json")
#: the shipped grammar's open word classes: Zipf-like probabilities, words listed from most to least frequent
OPEN_CLASSES = ("N_SG", "N_PL", "ADJ", "VI_SG", "VI_PL", "VI_PAST", "VT_SG", "VT_PL", "VT_PAST", "ADV", "P", "NAME",
                "SUB")


# ---------------------------------------------------------------------------------------------
# PCFG
# ---------------------------------------------------------------------------------------------


def _check_termination(rules: Mapping[str, Sequence[Tuple[float, Tuple[str, ...]]]], start: str) -> None:
    """A ValueError unless every nonterminal that the start symbol reaches (through rules of positive
    probability) derives some finite sentence: otherwise derivations through it never end and the sentence
    probabilities do not sum to 1."""
    productive = set()
    changed = True
    while changed:
        changed = False
        for lhs, alts in rules.items():
            if lhs not in productive and any(p > 0 and all(s in productive or s not in rules for s in rhs)
                                             for p, rhs in alts):
                productive.add(lhs)
                changed = True
    seen, todo = {start}, [start]
    while todo:
        a = todo.pop()
        for p, rhs in rules[a]:
            if p > 0:
                for s in rhs:
                    if s in rules and s not in seen:
                        seen.add(s)
                        todo.append(s)
    stuck = sorted(seen - productive)
    if stuck:
        raise ValueError(f"nonterminal {stuck[0]!r} (reached from {start!r}) never derives a finite sentence: its "
                         f"derivations do not end" + (f" ({len(stuck)} such nonterminals)" if len(stuck) > 1 else ""))


def _as_rhs(rhs: RHS) -> Tuple[str, ...]:
    if isinstance(rhs, str):
        return tuple(rhs.split())
    return tuple(rhs)


class PCFG:
    """A probabilistic context-free grammar with exact string probabilities.

    ``rules`` maps each nonterminal to a list of ``(probability, rhs)`` pairs, where ``rhs`` is
    a sequence of symbols or a whitespace-separated string.  Every symbol that is not a key of
    ``rules`` is a terminal.  Probabilities of each nonterminal must sum to 1; empty right-hand
    sides are not supported.  Unary rules between nonterminals are allowed, including cycles
    (their closure is computed exactly) as long as the unary part is substochastic.
    """

    def __init__(self, rules: Rules, start: str):
        if start not in rules:
            raise ValueError(f"start symbol {start!r} has no rules")
        norm: Dict[str, Tuple[Tuple[float, Tuple[str, ...]], ...]] = {}
        for lhs, alts in rules.items():
            if not isinstance(lhs, str) or not lhs or any(c.isspace() for c in lhs):
                raise ValueError(f"invalid nonterminal name {lhs!r}")
            alts = list(alts)
            if not alts:
                raise ValueError(f"nonterminal {lhs!r} has no rules")
            out = []
            for prob, rhs in alts:
                prob = float(prob)
                sym = _as_rhs(rhs)
                if not sym:
                    raise ValueError(f"nonterminal {lhs!r} has an empty right-hand side")
                if not (prob >= 0.0) or math.isinf(prob):
                    raise ValueError(f"nonterminal {lhs!r} has an invalid probability {prob!r}")
                for s in sym:
                    if not isinstance(s, str) or not s or any(c.isspace() for c in s):
                        raise ValueError(f"invalid symbol {s!r} in a rule of {lhs!r}")
                out.append((prob, sym))
            total = math.fsum(p for p, _ in out)
            if abs(total - 1.0) > _PROB_TOL:
                raise ValueError(
                    f"rule probabilities of nonterminal {lhs!r} sum to {total!r}, not 1"
                )
            norm[lhs] = tuple(out)
        n_symbols = sum(len(rhs) for alts in norm.values() for _, rhs in alts)
        if n_symbols > MAX_RULE_SYMBOLS:
            raise ValueError(f"the rules hold {n_symbols} symbols, more than the {MAX_RULE_SYMBOLS} a grammar may "
                             f"have")
        long = next(((lhs, len(rhs)) for lhs, alts in norm.items() for _, rhs in alts if len(rhs) > MAX_RHS), None)
        if long is not None:
            raise ValueError(f"a rule of {long[0]!r} has {long[1]} symbols on its right-hand side, more than "
                             f"{MAX_RHS}")
        _check_termination(norm, start)
        self.rules = norm
        self.start = start
        self.nonterminals: Tuple[str, ...] = tuple(norm)
        terms = {s for alts in norm.values() for _, rhs in alts for s in rhs if s not in norm}
        self.terminals: Tuple[str, ...] = tuple(sorted(terms))
        self._build_sampler()
        self._build_inside()
        self._cache: Dict[Tuple[str, ...], float] = {}

    @classmethod
    def from_rules(cls, rules: Rules, start: str) -> "PCFG":
        return cls(rules, start)

    # -- basic information --------------------------------------------------------------------

    def vocabulary(self) -> List[str]:
        """Sorted list of terminal symbols."""
        return list(self.terminals)

    def rule_prob(self, lhs: str, rhs: RHS) -> float:
        """Total probability of the rule ``lhs -> rhs`` (0 if absent)."""
        sym = _as_rhs(rhs)
        return math.fsum(p for p, r in self.rules[lhs] if r == sym)

    def _topological(self) -> Optional[List[str]]:
        """Nonterminals, children before parents; None if the grammar is recursive."""
        order: List[str] = []
        state: Dict[str, int] = {}
        for root in self.nonterminals:
            if root in state:
                continue
            stack = [(root, iter(self._children(root)))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                for child in it:
                    st = state.get(child, 0)
                    if st == 1:
                        return None
                    if st == 0:
                        state[child] = 1
                        stack.append((child, iter(self._children(child))))
                        break
                else:
                    stack.pop()
                    state[node] = 2
                    order.append(node)
        return order

    def _children(self, lhs: str) -> List[str]:
        seen = []
        for _, rhs in self.rules[lhs]:
            for s in rhs:
                if s in self.rules and s not in seen:
                    seen.append(s)
        return seen

    def max_length(self) -> float:
        """Length of the longest derivable sentence (``math.inf`` for a recursive grammar)."""
        order = self._topological()
        if order is None:
            return math.inf
        best: Dict[str, int] = {}
        for a in order:
            best[a] = max(sum(best.get(s, 1) for s in rhs) for p, rhs in self.rules[a] if p > 0)
        return best[self.start]

    def min_length(self) -> int:
        """Length of the shortest derivable sentence."""
        best = {a: math.inf for a in self.nonterminals}
        changed = True
        while changed:
            changed = False
            for a, alts in self.rules.items():
                v = min(sum(best.get(s, 1) for s in rhs) for p, rhs in alts if p > 0)
                if v < best[a]:
                    best[a] = v
                    changed = True
        return int(best[self.start])

    def expected_length(self) -> float:
        """Exact expected sentence length (number of tokens) under the grammar."""
        idx = {a: i for i, a in enumerate(self.nonterminals)}
        n = len(idx)
        m = np.zeros((n, n))
        b = np.zeros(n)
        for a, alts in self.rules.items():
            for p, rhs in alts:
                for s in rhs:
                    if s in idx:
                        m[idx[a], idx[s]] += p
                    else:
                        b[idx[a]] += p
        e = np.linalg.solve(np.eye(n) - m, b)
        return float(e[idx[self.start]])

    def count_derivations(self) -> float:
        """Number of distinct derivations (``math.inf`` for a recursive grammar).

        Returned as an exact Python integer when finite.  Distinct sentences are at most this
        many (ambiguous sentences have several derivations).
        """
        order = self._topological()
        if order is None:
            return math.inf
        cnt: Dict[str, int] = {}
        for a in order:
            total = 0
            for p, rhs in self.rules[a]:
                if p == 0:
                    continue
                c = 1
                for s in rhs:
                    c *= cnt.get(s, 1)
                total += c
            cnt[a] = total
        return cnt[self.start]

    # -- sampling -----------------------------------------------------------------------------

    def _build_sampler(self) -> None:
        self._samp: Dict[str, Tuple[List[float], List[Tuple[str, ...]], int]] = {}
        for lhs, alts in self.rules.items():
            cum: List[float] = []
            acc = 0.0
            for p, _ in alts:
                acc += p
                cum.append(acc)
            last = max(i for i, (p, _) in enumerate(alts) if p > 0.0)
            # reversed right-hand sides, ready to be pushed onto the expansion stack
            self._samp[lhs] = (cum, [tuple(reversed(rhs)) for _, rhs in alts], last)

    #: uniforms are drawn from the generator in blocks of this size (one block per sentence,
    #: more blocks only for sentences that need more choices)
    SAMPLE_BLOCK = 32

    def sample(self, rng: np.random.Generator) -> List[str]:
        """Draw one sentence (list of tokens, no begin/end markers).

        The derivation is expanded depth-first, left to right; every expansion of a nonterminal
        with more than one rule uses the next uniform number.  Uniforms are taken from
        ``rng.random(SAMPLE_BLOCK)`` blocks drawn for this sentence alone, so the generator
        state after the call depends only on its state before and on the number of choices.
        """
        out: List[str] = []
        samp = self._samp
        block = self.SAMPLE_BLOCK
        us: List[float] = rng.random(block).tolist()
        j = 0
        stack = [self.start]
        while stack:
            sym = stack.pop()
            entry = samp.get(sym)
            if entry is None:
                out.append(sym)
                continue
            cum, rhss, last = entry
            if len(rhss) == 1:
                k = 0
            else:
                if j == len(us):
                    us.extend(rng.random(block).tolist())
                u = us[j]
                j += 1
                # first rule whose cumulative probability exceeds u (zero-probability rules
                # are never chosen); u beyond the rounded total picks the last positive rule
                k = bisect.bisect_right(cum, u, 0, last)
            stack.extend(rhss[k])
        return out

    # -- inside algorithm ---------------------------------------------------------------------

    def _build_inside(self) -> None:
        """Binarise the grammar and precompute sparse tables for the inside algorithm.

        Chart symbols are the grammar's nonterminals, one fresh symbol per inner position of
        every right-hand side longer than two (``A -> X1 X2 X3`` becomes ``A -> X1 <A.r.1>``
        and ``<A.r.1> -> X2 X3``), and one pre-terminal per terminal that occurs in a
        right-hand side of length >= 2 (``<w> -> w`` with probability 1).  Fresh symbols are
        never shared, so derivations of the binarised grammar correspond one-to-one to
        derivations of the original grammar, with equal probabilities.  Unary rules are folded
        into a closure table: ``closure[s]`` lists every ancestor ``a`` of ``s`` with the total
        probability of all unary chains ``a =>* s`` (including ``s`` itself with weight 1).

        Everything is plain Python floats with a fixed summation order, so results are
        bit-for-bit reproducible across machines (except for grammars with unary cycles, whose
        closure is obtained by a matrix inverse).
        """
        names: List[object] = list(self.nonterminals)
        index: Dict[object, int] = {a: i for i, a in enumerate(names)}
        term_id = {t: i for i, t in enumerate(self.terminals)}
        unary: List[Tuple[int, int, float]] = []  # parent, child symbol, prob
        lexical: List[Tuple[int, int, float]] = []  # parent, terminal, prob
        binary: List[Tuple[int, int, int, float]] = []  # parent, left, right, prob

        def fresh(key: object) -> int:
            index[key] = len(names)
            names.append(key)
            return index[key]

        def child(s: str) -> int:
            if s in self.rules:
                return index[s]
            key = ("pre", s)
            if key not in index:
                lexical.append((fresh(key), term_id[s], 1.0))
            return index[key]

        for lhs, alts in self.rules.items():
            a = index[lhs]
            for r, (p, rhs) in enumerate(alts):
                if p == 0.0:
                    continue
                if len(rhs) == 1:
                    s = rhs[0]
                    if s in self.rules:
                        unary.append((a, index[s], p))
                    else:
                        lexical.append((a, term_id[s], p))
                    continue
                parent, prob = a, p
                for pos in range(len(rhs) - 2):
                    nxt = fresh(("bin", lhs, r, pos + 1))
                    binary.append((parent, child(rhs[pos]), nxt, prob))
                    parent, prob = nxt, 1.0
                binary.append((parent, child(rhs[-2]), child(rhs[-1]), prob))

        n_sym = len(names)
        start = index[self.start]
        # only symbols that can be combined further (or the start symbol) need chart entries
        useful = {l for _, l, _, _ in binary} | {r for _, _, r, _ in binary} | {start}
        closure = self._unary_closure(n_sym, unary)
        self._closure_up: List[List[Tuple[int, float]]] = [
            [(a, w) for a, w in closure[s] if a in useful] for s in range(n_sym)
        ]
        lex_cells: List[Dict[int, float]] = [dict() for _ in self.terminals]
        for b, t, p in lexical:
            cell = lex_cells[t]
            for a, w in closure[b]:
                if a in useful:
                    cell[a] = cell.get(a, 0.0) + w * p
        self._lex_cells = [{a: v for a, v in c.items() if v != 0.0} for c in lex_cells]
        by_left: Dict[int, Dict[int, List[Tuple[int, float]]]] = {}
        for a, l, r, p in binary:
            by_left.setdefault(l, {}).setdefault(r, []).append((a, p))
        self._by_left = by_left
        self._term_id = term_id
        self._start_id = start
        self._symbol_names = names
        self._n_binary = len(binary)

    @staticmethod
    def _unary_closure(n_sym: int, unary: List[Tuple[int, int, float]]) -> List[List[Tuple[int, float]]]:
        """For every symbol s: [(a, total probability of unary chains a =>* s), ...]. Without cycles the sums
        are taken children first; with a cycle, (I - U)^-1 over the symbols that appear in unary rules only
        (the others have the closure [(s, 1)]), at most :data:`MAX_UNARY_CYCLE_SYMBOLS` of them."""
        out = PCFG._unary_closure_acyclic(n_sym, unary)
        if out is not None:
            return out
        nodes = sorted({a for a, _, _ in unary} | {b for _, b, _ in unary})
        if len(nodes) > MAX_UNARY_CYCLE_SYMBOLS:
            raise ValueError(f"unary rules with a cycle join {len(nodes)} symbols, more than the "
                             f"{MAX_UNARY_CYCLE_SYMBOLS} whose closure can be computed")
        pos = {s: i for i, s in enumerate(nodes)}
        u = np.zeros((len(nodes), len(nodes)))
        for a, b, p in unary:
            u[pos[a], pos[b]] += p
        if np.max(np.abs(np.linalg.eigvals(u))) >= 1.0 - 1e-12:
            raise ValueError("unary rules form a cycle that is never left")
        c = np.linalg.inv(np.eye(len(nodes)) - u)
        result: List[List[Tuple[int, float]]] = [[(s, 1.0)] for s in range(n_sym)]
        for s in nodes:
            col = c[:, pos[s]]
            result[s] = [(a, float(col[pos[a]])) for a in nodes if col[pos[a]] != 0.0]
        return result

    @staticmethod
    def _unary_closure_acyclic(n_sym: int, unary: List[Tuple[int, int, float]]
                               ) -> Optional[List[List[Tuple[int, float]]]]:
        """For every symbol s: [(a, total probability of unary chains a =>* s), ...]."""
        parents: Dict[int, List[Tuple[int, float]]] = {}
        for a, b, p in unary:
            parents.setdefault(b, []).append((a, p))
        # children-before-parents order of the unary graph (None if it has a cycle)
        indeg = [0] * n_sym
        kids: Dict[int, List[int]] = {}
        for a, b, _ in unary:
            indeg[a] += 1
            kids.setdefault(b, []).append(a)
        order = [s for s in range(n_sym) if indeg[s] == 0]
        for s in order:
            for a in kids.get(s, ()):
                indeg[a] -= 1
                if indeg[a] == 0:
                    order.append(a)
        if len(order) == n_sym:
            rank = {s: i for i, s in enumerate(order)}
            children: Dict[int, List[Tuple[int, float]]] = {}
            for a, b, p in unary:
                children.setdefault(a, []).append((b, p))
            out = []
            for s in range(n_sym):
                # ancestors of s, visited children first
                anc = set()
                todo = [s]
                while todo:
                    x = todo.pop()
                    for a, _ in parents.get(x, ()):
                        if a not in anc:
                            anc.add(a)
                            todo.append(a)
                weight = {s: 1.0}
                for a in sorted(anc, key=rank.__getitem__):
                    weight[a] = math.fsum(p * weight.get(b, 0.0) for b, p in children[a])
                out.append([(a, w) for a, w in weight.items() if w != 0.0])
            return out
        return None

    def _inside(self, ids: Sequence[int]) -> float:
        """Inside probability of the start symbol over the whole sentence (CKY, sparse cells)."""
        n = len(ids)
        chart: List[List[Optional[Dict[int, float]]]] = [[None] * (n + 1) for _ in range(n + 1)]
        for i, t in enumerate(ids):
            chart[i][i + 1] = self._lex_cells[t]
        by_left = self._by_left
        up = self._closure_up
        for length in range(2, n + 1):
            for i in range(n - length + 1):
                j = i + length
                row = chart[i]
                base: Dict[int, float] = {}
                for k in range(i + 1, j):
                    left = row[k]
                    if not left:
                        continue
                    right = chart[k][j]
                    if not right:
                        continue
                    for b, pb in left.items():
                        rules_b = by_left.get(b)
                        if rules_b is None:
                            continue
                        for c, pc in right.items():
                            lst = rules_b.get(c)
                            if lst:
                                v = pb * pc
                                for a, p in lst:
                                    base[a] = base.get(a, 0.0) + p * v
                if base:
                    cell: Dict[int, float] = {}
                    for s, v in base.items():
                        for a, w in up[s]:
                            cell[a] = cell.get(a, 0.0) + w * v
                    row[j] = cell
        top = chart[0][n]
        return top.get(self._start_id, 0.0) if top else 0.0

    def log_probs(self, sentences: Iterable[Sequence[str]]) -> List[float]:
        """Exact natural-log probabilities of many sentences (memoised)."""
        out: List[float] = []
        cache = self._cache
        if len(cache) > 1_000_000:
            cache.clear()
        term_id = self._term_id
        for s in sentences:
            key = tuple(s)
            lp = cache.get(key)
            if lp is None:
                if not key or any(w not in term_id for w in key):
                    lp = -math.inf
                else:
                    v = self._inside([term_id[w] for w in key])
                    lp = math.log(v) if v > 0.0 else -math.inf
                cache[key] = lp
            out.append(lp)
        return out

    def log_prob(self, tokens: Sequence[str]) -> float:
        """Exact natural-log probability that the grammar generates exactly ``tokens``.

        Sums over all derivations (inside algorithm); ``-inf`` outside the language.
        """
        return self.log_probs([tokens])[0]

    def prob(self, tokens: Sequence[str]) -> float:
        return math.exp(self.log_prob(tokens))

    # -- description --------------------------------------------------------------------------

    def format_rules(self, nonterminals: Optional[Iterable[str]] = None) -> str:
        lines = []
        for lhs in nonterminals if nonterminals is not None else self.nonterminals:
            alts = self.rules[lhs]
            for j, (p, rhs) in enumerate(alts):
                head = f"{lhs} ->" if j == 0 else " " * len(lhs) + "  |"
                lines.append(f"{head} {' '.join(rhs)}  [{p:.2f}]")
        return "\n".join(lines)


    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self, indent: Optional[int] = 1) -> str:
        """The grammar as plain JSON: ``{"start": S, "rules": {lhs: [[prob, "rhs symbols"], ...], ...}}``.

        Probabilities are written with Python's shortest round-trip float repr, so :meth:`from_json` gives
        back exactly the same rule probabilities (and so identical ``log_probs``).
        """
        rules = {lhs: [[p, " ".join(rhs)] for p, rhs in alts] for lhs, alts in self.rules.items()}
        return json.dumps({"start": self.start, "rules": rules}, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: Optional[str] = None) -> "PCFG":
        """Parse :meth:`to_json`'s format and build the grammar with the validating constructor.

        A right-hand side is a whitespace-separated string of symbols (a list of symbol strings is accepted
        too). Anything else (not JSON, a repeated nonterminal, a missing key, a non-numeric probability,
        probabilities that do not sum to 1, ...) is a ``ValueError``; ``source`` (e.g. a file name) is put in
        front of its message. Only data is read: no code is ever executed.
        """
        where = f"{source}: " if source else ""

        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"repeated key(s) {dup}")
            return dict(pairs)

        from ..files import FileFormatError, loads_json

        try:
            data = loads_json(text, f"{source or 'the grammar'}", max_depth=_GRAMMAR_DEPTH,
                              object_pairs_hook=no_duplicates)
        except FileFormatError as e:
            raise ValueError(str(e) if source else f"not a grammar file: {e}") from None
        except ValueError as e:
            raise ValueError(f"{where}not a grammar file: {e}") from None
        expected = 'expected {"start": "S", "rules": {"S": [[1.0, "NP VP"], ...], ...}}'
        if not isinstance(data, dict) or set(data) != {"start", "rules"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}not a grammar file: {expected}; got {keys}")
        start, rules = data["start"], data["rules"]
        if not isinstance(start, str):
            raise ValueError(f"{where}\"start\" must be a string, got {start!r}")
        if not isinstance(rules, dict) or not rules:
            raise ValueError(f"{where}\"rules\" must be a non-empty mapping from nonterminals to rule lists")
        norm: Dict[str, List[Tuple[float, Tuple[str, ...]]]] = {}
        for lhs, alts in rules.items():
            if not isinstance(alts, list) or not alts:
                raise ValueError(f"{where}the rules of {lhs!r} must be a non-empty list of [probability, rhs]")
            out = []
            for alt in alts:
                ok = isinstance(alt, list) and len(alt) == 2
                prob, rhs = (alt if ok else (None, None))
                ok = ok and isinstance(prob, (int, float)) and not isinstance(prob, bool)
                ok = ok and (isinstance(rhs, str) or (isinstance(rhs, list) and all(isinstance(s, str) for s in rhs)))
                if not ok:
                    raise ValueError(f"{where}a rule of {lhs!r} is not [probability, \"rhs symbols\"]: {alt!r}")
                out.append((float(prob), _as_rhs(rhs)))
            norm[lhs] = out
        try:
            return cls(norm, start)
        except ValueError as e:
            raise ValueError(f"{where}invalid grammar: {e}") from None

    def save_json(self, path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8) through :func:`textebm.files.write_file`."""
        from ..files import write_file

        write_file(path, self.to_json() + "\n")

    @classmethod
    def load_json(cls, path: Union[str, os.PathLike]) -> "PCFG":
        """Read a grammar written by :meth:`save_json` (a regular file of at most :data:`MAX_GRAMMAR_BYTES`),
        checked as the module docstring says; a malformed file is a ``ValueError`` naming it."""
        from ..files import read_regular

        path = os.fspath(path)
        raw = read_regular(path, "grammar file", MAX_GRAMMAR_BYTES)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None
        return cls.from_json(text, source=path)

_DEFAULT: Optional[PCFG] = None


def default_grammar() -> PCFG:
    """The shipped grammar, read from :data:`DEFAULT_GRAMMAR_FILE` (a shared, cached instance)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PCFG.load_json(DEFAULT_GRAMMAR_FILE)
    return _DEFAULT


def default_rules() -> Dict[str, List[Tuple[float, str]]]:
    """The shipped grammar's rules as a new dict: nonterminal -> list of (probability, right-hand side)."""
    return {lhs: [(p, " ".join(rhs)) for p, rhs in alts] for lhs, alts in default_grammar().rules.items()}


def __getattr__(name: str):
    # DEFAULT_GRAMMAR, the rules dict this module once built at import, is read from the data file when first asked
    if name == "DEFAULT_GRAMMAR":
        return default_rules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Corpus generation
# ---------------------------------------------------------------------------------------------


def sample_splits(
    grammar: PCFG, seed: int = 0, counts: Optional[Mapping[str, int]] = None
) -> Dict[str, List[List[str]]]:
    """Sample the splits from one PCG64 stream, in the fixed order train, valid, test."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    rng = np.random.Generator(np.random.PCG64(seed))
    return {name: [grammar.sample(rng) for _ in range(int(counts[name]))] for name in SPLITS}


def split_stats(grammar: PCFG, sentences: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Exact likelihood statistics of a list of sentences under ``grammar``.

    ``ppl_with_eos`` counts one end-of-sentence event per sentence:
    ``exp(total_nll / (n_tokens + n_sentences))``.
    """
    lps = grammar.log_probs(sentences)
    n_sent = len(sentences)
    n_tok = sum(len(s) for s in sentences)
    total = -math.fsum(lps)
    return {
        "n_sentences": n_sent,
        "n_tokens": n_tok,
        "total_nll_nats": total,
        "mean_nll_nats": total / n_sent if n_sent else float("nan"),
        "ppl_with_eos": math.exp(total / (n_tok + n_sent)) if n_sent else float("nan"),
    }


def read_split(path: Union[str, os.PathLike]) -> List[List[str]]:
    """Read a corpus file: one sentence per line (lines end at ``\\n`` only, as everywhere in textebm), tokens
    separated by single spaces."""
    with open(path, "r", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split(" ") for line in lines]
