"""Image metrics against known answers: Fréchet distance, FID, Inception wrapper, anomaly AUCs, PNG grids."""
import numpy as np
import pytest
import torch

from textebm.eval.anomaly import AnomalyMetricError, anomaly_report, auprc, auroc
from textebm.eval.image_metrics import (INCEPTION_FILE, ImageMetricError, InceptionFeatures, extract_features, fid,
                                feature_statistics, frechet_distance, make_grid, mse, save_image_grid)


def test_frechet_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 9.0])
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-12)
    assert frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(a)), mu1, np.diag(a)) == pytest.approx(0, abs=1e-12)


def test_frechet_non_commuting_against_scipy():
    from scipy.linalg import sqrtm

    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 3.0]])
    mu1, mu2 = np.array([0.3, -0.2]), np.array([-1.0, 0.5])
    covmean = sqrtm(s1 @ s2).real
    expect = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-9)
    with pytest.raises(ImageMetricError, match="sigma2"):
        frechet_distance(mu1, s1, mu2, np.eye(3))
    with pytest.raises(ImageMetricError, match="same length"):
        frechet_distance(mu1, s1, np.zeros(3), s2)


def test_feature_statistics_unbiased():
    f = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, s = feature_statistics(f)
    assert np.allclose(mu, [2.0, 4.0]) and np.allclose(s, np.cov(f.T, ddof=1))
    with pytest.raises(ImageMetricError, match="at least 2"):
        feature_statistics(f[:1])


def test_fid_random_projection_approaches_analytic():
    # images of 8 pixels, a fixed random projection to D = 3: features are Gaussian with known moments
    g = torch.Generator().manual_seed(0)
    P = torch.randn(8, 3, generator=g, dtype=torch.float64)
    extractor = lambda x: x.flatten(1).double() @ P  # noqa: E731
    n = 20000
    m1, m2 = torch.zeros(8, dtype=torch.float64), torch.full((8,), 0.1, dtype=torch.float64)
    sd1, sd2 = 0.2, 0.3
    real = (m1 + sd1 * torch.randn(n, 8, generator=g, dtype=torch.float64)).view(n, 2, 2, 2)
    fake = (m2 + sd2 * torch.randn(n, 8, generator=g, dtype=torch.float64)).view(n, 2, 2, 2)
    mu1, mu2 = (m1 @ P).numpy(), (m2 @ P).numpy()
    c = (P.T @ P).numpy()
    expect = frechet_distance(mu1, sd1 ** 2 * c, mu2, sd2 ** 2 * c)
    got = fid(real, fake, extractor, batch_size=5000)
    assert got == pytest.approx(expect, rel=0.05)
    assert fid(real, real, extractor, batch_size=5000) == pytest.approx(0.0, abs=1e-8)
    feats = extract_features(lambda x: x, real[:10])  # rank-4 outputs are flattened
    assert feats.shape == (10, 8) and feats.dtype == np.float64


def test_inception_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        InceptionFeatures(tmp_path / "nothing.pt")
    msg = str(e.value)
    assert INCEPTION_FILE in msg and "no download" in msg and "--inception" in msg


class _Probe(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        is_u8 = torch.full((x.shape[0],), float(x.dtype == torch.uint8))
        chans = torch.full((x.shape[0],), float(x.shape[1]))
        return torch.stack([is_u8, chans, x.float().flatten(1).mean(1), x.float().flatten(1).max(1).values], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_inception_wrapper_with_scripted_probe(tmp_path):
    path = tmp_path / INCEPTION_FILE
    torch.jit.script(_Probe()).save(str(path))
    net = InceptionFeatures(path)
    x = torch.full((2, 1, 4, 4), -1.0)
    x[1] = 1.0
    out = net(x)
    assert out.shape == (2, 4)
    assert out[:, 0].tolist() == [1.0, 1.0] and out[:, 1].tolist() == [3.0, 3.0]
    assert out[:, 2].tolist() == [0.0, 255.0]
    assert InceptionFeatures(tmp_path)(torch.zeros(1, 3, 4, 4))[0, 3].item() == 128.0  # a folder works too


def test_mse():
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    assert mse(a, b) == 1.0 and mse(a, a) == 0.0
    with pytest.raises(ImageMetricError, match="shape"):
        mse(a, b[:1])


def test_anomaly_metrics():
    y = np.array([0, 0, 0, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.9, 1.0])
    assert auprc(perfect, y) == 1.0 and auroc(perfect, y) == 1.0
    rng = np.random.default_rng(0)
    yr = (rng.random(20000) < 0.2).astype(int)
    sr = rng.random(20000)
    assert abs(auprc(sr, yr) - yr.mean()) < 0.03 and abs(auroc(sr, yr) - 0.5) < 0.03
    with pytest.raises(AnomalyMetricError, match="NaN"):
        auroc(np.array([0.1, np.nan, 0.3, 0.9, 1.0]), y)
    with pytest.raises(AnomalyMetricError, match="only class"):
        auprc(perfect, np.zeros(5))
    with pytest.raises(AnomalyMetricError, match="binary"):
        auroc(perfect, np.array([0, 1, 2, 1, 0]))
    with pytest.raises(AnomalyMetricError, match="lengths"):
        auroc(perfect[:4], y)
    rep = anomaly_report({"joint": perfect, "prior": -perfect}, y)
    assert rep["positive_rate"] == pytest.approx(0.4) and rep["joint"]["auroc"] == 1.0
    assert rep["prior"]["auroc"] == 0.0 and rep["n"] == 5 and rep["n_anomalies"] == 2


@pytest.mark.parametrize("channels", [1, 3])
def test_save_image_grid(tmp_path, channels):
    from PIL import Image

    x = torch.full((5, channels, 3, 4), -1.0)
    x[1] = 1.0
    path = save_image_grid(x, tmp_path / "sub" / "grid.png", padding=1, pad_value=-1.0)
    img = Image.open(path)
    assert img.mode == ("L" if channels == 1 else "RGB")
    # nrow = ceil(sqrt(5)) = 3 per row, 2 rows: width 3 * (4 + 1) + 1, height 2 * (3 + 1) + 1
    assert img.size == (16, 9)
    a = np.asarray(img).reshape(9, 16, channels)
    assert (a[1:4, 1:5] == 0).all() and (a[1:4, 6:10] == 255).all()
    assert (a[0] == 0).all()  # padding -1 -> 0
    g = make_grid(x, nrow=5, padding=0)
    assert g.shape == (3, 20, channels) and g.dtype == np.uint8
    assert not list(path.parent.glob(".*tmp*"))
