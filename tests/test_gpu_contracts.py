"""The GPU contracts, checked on the CPU by proxy (no GPU is needed; the `cuda` tests run where one is):

* cuDNN computes an RNN's backward only from a training-mode forward: every nn.RNNBase forward that a gradient
  passes through runs in training mode, on every path that differentiates through a decoder;
* no host synchronization inside a chain: the tensor-to-Python reads of a whole posterior or prior chain are
  few and do not grow with the number of steps;
* a captured chain is the eager chain: the graph's body run eagerly gives the same z on the same noise;
* no atomic accumulation in the hot path: every index_add / scatter_add / index_put(accumulate) of a training step
  writes each position at most once, so results do not depend on thread order.
"""
import contextlib
import signal
import traceback
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from textebm.train import Trainer

from conftest import tiny_recipe

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item", "is_nonzero",
            "repeat_interleave"}
ACCUMULATING = {"index_add", "index_add_", "scatter_add", "scatter_add_", "index_put", "index_put_", "put_",
                "scatter_reduce", "scatter_reduce_", "_index_put_impl_"}


def _in_optimizer() -> bool:
    """Whether torch.optim is on the stack: Adam reads its step counters, which live on the CPU on a GPU too."""
    return any("torch/optim/" in f.filename for f in traceback.extract_stack())


class OpLog(TorchDispatchMode):
    """Records aten ops; counts host reads (plus Tensor.tolist / numpy / cpu, which do not dispatch)."""

    def __init__(self):
        super().__init__()
        self.syncs = Counter()
        self.accumulations = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not _in_optimizer():
            self.syncs[name] += 1
        if name in ACCUMULATING:
            self.accumulations.append((name, _writes_each_once(name, args, kwargs)))
        return func(*args, **kwargs)


def _writes_each_once(name, args, kwargs):
    """Whether an accumulating op adds into each output position at most once (then its order cannot matter)."""
    if name.startswith("index_add"):
        index = args[2]
        return index.numel() == index.unique().numel()
    if name.startswith("scatter"):
        index = args[2]
        dim = args[1] % index.dim()
        srt = index.sort(dim).values
        return bool((srt.narrow(dim, 1, srt.shape[dim] - 1) != srt.narrow(dim, 0, srt.shape[dim] - 1)).all()) \
            if srt.shape[dim] > 1 else True
    if name in ("index_put", "index_put_", "_index_put_impl_"):
        accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
        if not accumulate:
            return True
        idx = torch.stack([i.reshape(-1) for i in args[1] if i is not None], 1)
        return idx.shape[0] == idx.unique(dim=0).shape[0]
    return False  # put_ and scatter_reduce accumulate by design


@contextlib.contextmanager
def counting_host_reads():
    log = OpLog()
    orig = {n: getattr(torch.Tensor, n) for n in ("tolist", "numpy", "cpu")}

    def wrap(n):
        def f(self, *a, **k):
            log.syncs[n] += 1
            return orig[n](self, *a, **k)
        return f

    for n in orig:
        setattr(torch.Tensor, n, wrap(n))
    try:
        with log:
            yield log
    finally:
        for n, f in orig.items():
            setattr(torch.Tensor, n, f)


def trainer(toy_corpus, tmp_path, *extra):
    return Trainer(tiny_recipe(toy_corpus, "model.decoder_args={impl: fused}", *extra), tmp_path / "r",
                   device="cpu", progress=False)


# ---- cuDNN: RNN backward only from training mode -----------------------------------------------------------
@pytest.fixture
def rnn_mode_guard():
    """A global forward pre-hook: every RNN forward with grad enabled must be in training mode."""
    seen = {"calls": 0, "with_grad": 0}

    def hook(module, inputs):
        if isinstance(module, torch.nn.RNNBase):
            seen["calls"] += 1
            if torch.is_grad_enabled():
                seen["with_grad"] += 1
                assert module.training, "an RNN ran in eval mode with gradients enabled (cuDNN cannot backprop)"

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    yield seen
    handle.remove()


def test_rnn_forwards_with_gradient_run_in_training_mode_on_every_path(toy_corpus, tmp_path, rnn_mode_guard,
                                                                       capsys):
    from textebm.cli import main

    tr = trainer(toy_corpus, tmp_path, "train.steps=2", "train.eval_every=2", "train.latent_batches=1",
                 "train.latent_chains=3")
    tr.run()  # training steps, validation (recon NLL, latent diagnostics), final save
    assert rnn_mode_guard["with_grad"] > 0
    run = str(tmp_path / "r")
    for argv in (["eval", run, "--nll", "--recon", "--latent", "--max-sentences", "4", "-K", "2", "--chains",
                  "2", "--log-z-samples", "64"], ["chain", run, "--steps", "3"], ["sample", run, "-n", "2"]):
        assert main(argv) == 0, capsys.readouterr().err
    m = tr.model
    m.eval()
    x = tr.data.next().x
    m.sample_posterior(x)  # direct library use, eval mode
    from textebm.eval.likelihood import fit_posterior_proposal

    with torch.no_grad():  # the IS proposal is fitted under no_grad; its chains enable gradients themselves
        fit_posterior_proposal(m, x, n_chains=2, chain=m.posterior_chain.replace(n_steps=2))
    assert rnn_mode_guard["calls"] > rnn_mode_guard["with_grad"]  # generation still runs in eval mode
    assert not m.decoder.lstm.training  # and the mode is restored


# ---- no host synchronization inside a chain --------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 40])
def test_a_chain_reads_the_device_a_constant_few_times(toy_corpus, tmp_path, k):
    tr = trainer(toy_corpus, tmp_path, f"sampling.posterior_steps={k}", f"sampling.prior_steps={k}")
    x = tr.data.next().x
    tr.sample_posterior(x)  # warm up (first-call allocations)
    with counting_host_reads() as log:
        tr.sample_posterior(x)
    posterior = sum(log.syncs.values())
    with counting_host_reads() as log:
        tr.sample_prior(x.shape[0])
    prior = sum(log.syncs.values())
    assert posterior <= 4 and prior <= 4, (posterior, prior)


def test_a_training_step_reads_the_device_a_constant_few_times(toy_corpus, tmp_path):
    counts = []
    for k in (2, 30):
        tr = trainer(toy_corpus, tmp_path / str(k), f"sampling.posterior_steps={k}", f"sampling.prior_steps={k}")
        batch = tr.data.next()
        tr.train_step(batch)
        with counting_host_reads() as log:
            stats = tr.train_step(tr.data.next())
        counts.append(sum(log.syncs.values()))
        assert torch.is_tensor(stats["dec_nll"]) and torch.is_tensor(stats["f_gap"])  # read when logged
    # the two chains' final reads, the batch's real positions for the update and the loss check: a constant
    assert counts[0] == counts[1] <= 6, counts


# ---- captured chains are the eager chains ----------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["langevin", "mala", "sghmc"])
def test_the_graph_body_computes_the_eager_chain_under_the_same_noise(toy_corpus, tmp_path, sampler):
    """The function a CUDA graph records (static_body: the batch prepared with static shapes, the noise handed in)
    run here without capture, against run_chain's eager loop. That capture replays it exactly is the CUDA test
    below (test_cuda_captured_posterior_chain_equals_eager), which needs a GPU."""
    from textebm.sampling import get_sampler
    from textebm.sampling.capture import static_body
    from textebm.sampling.runner import ChainPlan, Density, draw_noise, finish_chain, run_chain

    tr = trainer(toy_corpus, tmp_path, "sampling.posterior_step_size=0.2")
    m = tr.model.eval()
    x = tr.data.bucket(tr.data.next().x, 8)
    chain = get_sampler(sampler)
    z0 = torch.randn(x.shape[0], m.latent_dim, generator=torch.Generator().manual_seed(0))
    plan = ChainPlan.build(chain, 7, 0.2 if sampler != "sghmc" else 0.05, trace=True)
    noise = draw_noise(chain, z0, 7, torch.Generator().manual_seed(1))
    density = Density(lambda xx, w: m.posterior_log_prob(xx, w, static=True), (x, torch.tensor(1.0)))
    from textebm.sampling import frozen

    with frozen(m):
        captured = finish_chain(static_body(chain, density, z0, plan, noise), plan)
        eager = run_chain(chain, m.posterior_log_prob(x), z0, 7, plan.step_sizes, noise=noise, trace=True)
    torch.testing.assert_close(captured.z, eager.z, rtol=1e-5, atol=1e-5)
    assert captured.trace == pytest.approx(eager.trace, rel=1e-5, abs=1e-4)


def test_chain_graphs_on_the_cpu_run_the_same_chain(toy_corpus, tmp_path):
    from textebm.sampling import ChainGraphs

    tr = trainer(toy_corpus, tmp_path)
    m = tr.model.eval()
    x = tr.data.next().x
    z0 = torch.randn(x.shape[0], m.latent_dim)
    a = m.sample_posterior(x, z0=z0, generator=torch.Generator().manual_seed(3), graphs=ChainGraphs())
    b = m.sample_posterior(x, z0=z0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_each_captured_call_draws_exactly_the_noise_of_an_eager_chain(monkeypatch):
    """The graph's noise tensors hold, at each replay, the draws an eager chain would make from the same generator
    (capture itself draws nothing), so captured runs keep the eager random stream and resume exactly. The CUDA graph
    API is replaced by stand-ins: what is checked is the host side, which draws and copies."""
    from textebm.sampling import ChainGraphs, Langevin
    from textebm.sampling.runner import ChainPlan, Density, draw_noise

    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(ChainGraphs, "usable", lambda self, z0, plan, sampler: True)
    chain, z0 = Langevin(), torch.zeros(4, 3)
    plan = ChainPlan.build(chain, 6, 0.1)
    density = Density(lambda: (lambda z: -0.5 * z.pow(2).sum(-1)), key=("gauss",))
    graphs, g, ref = ChainGraphs(), torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):
        graphs.run(chain, density, z0, plan, g)
        (entry,) = graphs.graphs.values()
        expected = draw_noise(chain, z0, 6, ref)
        assert all(torch.equal(a, b) for a, b in zip(entry.noise, expected))
    assert graphs.captures == 1 and graphs.replays == 3
    assert torch.equal(g.get_state(), ref.get_state())


# ---- no accumulation whose order could matter --------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fused", "unrolled"])
def test_a_training_step_never_accumulates_into_one_position_twice(toy_corpus, tmp_path, impl):
    tr = Trainer(tiny_recipe(toy_corpus, f"model.decoder_args={{impl: {impl}}}", "sampling.posterior_warm_start=true"),
                 tmp_path / "r", device="cpu", progress=False)
    tr.train_step(tr.data.next())
    log = OpLog()
    with log:
        tr.train_step(tr.data.next())
    bad = [name for name, once in log.accumulations if not once]
    assert not bad, bad


# ---- on a GPU ------------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.cuda
def test_cuda_captured_posterior_chain_equals_eager(toy_corpus, tmp_path):
    from textebm.sampling import ChainGraphs

    tr = Trainer(tiny_recipe(toy_corpus), tmp_path / "r", device="cuda", progress=False)
    m = tr.model.eval()
    x = tr.data.bucket(tr.data.next().x, 8).cuda()
    z0 = torch.randn(x.shape[0], m.latent_dim, device="cuda")
    graphs = ChainGraphs()
    outs = []
    for g in (graphs, graphs, None):  # capture, replay, eager
        gen = torch.Generator(device="cuda").manual_seed(5)
        outs.append(m.sample_posterior(x, z0=z0, generator=gen, graphs=g))
    assert graphs.captures == 1 and graphs.replays == 2
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1], outs[2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[cuda, pytest.mark.cuda])])
def test_a_deterministic_run_stopped_and_resumed_equals_the_uninterrupted_run(toy_corpus, tmp_path, device):
    """``train.deterministic``: deterministic kernels are on, and a run stopped at step 3 and resumed ends with the
    very parameters of a 6-step run (on CUDA: the fused LSTM under cuDNN, captured chains by default)."""
    from safetensors.torch import load_file

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    extra = ("train.save_every=100", "train.deterministic=true", "model.dropout_in=0.2")
    try:
        full = Trainer(tiny_recipe(toy_corpus, "train.steps=6", *extra), tmp_path / "full", device=device,
                       progress=False)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        full.run()
        cut = Trainer(tiny_recipe(toy_corpus, "train.steps=6", *extra), tmp_path / "cut", device=device,
                      progress=False)
        step = cut.train_step

        def stop_after_the_third(batch):  # what SIGTERM does: finish the step, write a checkpoint, stop
            out = step(batch)
            if cut.step == 2:
                cut.stop_signal = signal.SIGTERM
            return out

        cut.train_step = stop_after_the_third
        assert cut.run()["interrupted_by"] == signal.SIGTERM
        resumed = Trainer(tiny_recipe(toy_corpus, "train.steps=6", *extra), tmp_path / "cut", device=device,
                          resume=True, progress=False)
        assert resumed.step == 3
        resumed.run()
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_chain_stores_restored_on_the_cpu_follow_the_run_device():
    """A checkpoint is read on the CPU; the resumed run's chains must live on its device, not beside it (on CUDA a
    CPU buffer would fail or copy every step). 'meta' stands in for the GPU."""
    from textebm.sampling import ExampleChains, PersistentChains

    pcd = PersistentChains(n_chains=4, dim=3)
    pcd.load_state_dict({"buffer": torch.randn(4, 3), "n_calls": 2, "reinit": 0.05, "n_chains": 4})
    assert pcd.to("meta").buffer.device.type == "meta" and pcd.buffer.shape == (4, 3)
    per = ExampleChains(5, 3)
    per.load_state_dict({"z": torch.randn(5, 3), "seen": torch.zeros(5, dtype=torch.bool), "n_examples": 5, "dim": 3})
    per.to("meta")
    assert per.z.device.type == "meta" and per.seen.device.type == "meta"


@pytest.mark.parametrize("check_every, expected_calls", [(0, 20), (4, 4)])
def test_sampling_check_every_stops_both_chains_at_the_first_read_after_a_divergence(toy_corpus, tmp_path, check_every,
                                                                                    expected_calls):
    """``sampling.check_every`` reaches the posterior and the prior chain: a density that turns NaN at its second
    evaluation is caught at the first read after it (step 4), or once the 20-step chain ends (0)."""
    from textebm.sampling import SamplerDivergedError

    tr = trainer(toy_corpus, tmp_path, "sampling.posterior_steps=20", "sampling.prior_steps=20",
                 f"sampling.check_every={check_every}")
    m = tr.model
    x = tr.data.next().x

    def turning_nan(density):
        calls = []

        def lp(z):
            calls.append(1)
            out = density(z)
            return out * float("nan") if len(calls) >= 2 else out
        return lp, calls

    real_posterior = m.posterior_log_prob
    lp, calls = None, None

    def patched_posterior(*a, **k):
        nonlocal lp, calls
        lp, calls = turning_nan(real_posterior(*a, **k))
        return lp

    m.posterior_log_prob = patched_posterior
    with pytest.raises(SamplerDivergedError):
        tr.sample_posterior(x)
    assert len(calls) == expected_calls
    prior_lp, prior_calls = turning_nan(m.prior.log_prob_unnormalized)
    m.prior.log_prob_unnormalized = prior_lp
    with pytest.raises(SamplerDivergedError):
        tr.sample_prior(8)
    assert len(prior_calls) == expected_calls


def test_step_times_on_a_gpu_are_read_from_its_events_only_when_logged():
    """On CUDA a training step's times are event pairs: nothing waits for the device until the value is logged,
    and then it is the events' own elapsed time (host-clock times would measure kernel launches)."""
    from textebm.eval.report import jsonable
    from textebm.train import Elapsed, StepClock

    class Event:
        def __init__(self, ms):
            self.ms, self.waited = ms, False

        def synchronize(self):
            self.waited = True

        def elapsed_time(self, other):
            assert other.waited, "read before the end event completed"
            return other.ms - self.ms

    a, b = Event(100.0), Event(1600.0)
    t = Elapsed(a, b)
    assert not b.waited  # recording the time cost nothing
    assert jsonable({"time_step": t}) == {"time_step": 1.5} and b.waited
    clock = StepClock(torch.device("cpu"))
    assert not clock.cuda and clock.between(1.0, 3.5) == 2.5 and isinstance(clock.mark(), float)
    assert StepClock(torch.device("cuda", 0)).cuda


# ---- the symbol-vector prior's information term, on the prior and on an amortized posterior's codes ----------
SYMBOLS = ("prior.kind=symbol_vector", "prior.n_symbols=4", "prior.symbol_spread=10",
           "prior.objective_args={symbol_information: 5, symbol_balance: 0.5}")


def test_a_symbol_training_step_keeps_the_contracts(toy_corpus, tmp_path, rnn_mode_guard):
    """With the information term on both shares: the step reads the device exactly as often as the same step
    without symbols (the encoder's packing reads its lengths, outside any chain), however long the chains; the
    encoder's GRU backpropagates only in training mode; no position is accumulated into twice."""
    def reads(k, *extra):
        tr = trainer(toy_corpus, tmp_path / f"{k}{len(extra)}", "model.encoder=gru", *extra,
                     f"sampling.posterior_steps={k}", f"sampling.prior_steps={k}")
        tr.train_step(tr.data.next())
        with counting_host_reads() as log:
            stats = tr.train_step(tr.data.next())
        return tr, stats, sum(log.syncs.values())

    plain = reads(2)[2]
    for k in (2, 30):
        tr, stats, n = reads(k, *SYMBOLS)
        assert tr.loss.symbol_information == 5.0 and tr.loss.symbol_balance == 0.5  # both shares are on
        assert torch.is_tensor(stats["symbol_information"])  # read when logged
        assert n == plain, (k, n, plain)
    assert rnn_mode_guard["with_grad"] > 0
    log = OpLog()
    with log:
        tr.train_step(tr.data.next())
    bad = [name for name, once in log.accumulations if not once]
    assert not bad, bad
