import pytest

from contrastkit.evaluate import plot_curves, plot_embedding_2d

PNG_MAGIC = b"\x89PNG"


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_2d(tmp_path, clusters, method):
    x, y = clusters(10, 3)
    path = plot_embedding_2d(x, y, tmp_path / "fig" / f"{method}.png", method=method, class_names=["a", "b", "c"])
    assert path.read_bytes()[:4] == PNG_MAGIC


def test_plot_embedding_subsamples(tmp_path, clusters):
    x, y = clusters(50, 2)
    path = plot_embedding_2d(x, y, tmp_path / "p.png", max_points=20)
    assert path.is_file()


def test_plot_curves(tmp_path):
    records = [{"epoch": e, "loss": 5.0 - e} for e in range(6)]
    records[2]["knn_top1"] = 0.4
    records[5]["knn_top1"] = 0.6
    path = plot_curves(records, ["loss", "knn_top1"], tmp_path / "curves.png")
    assert path.read_bytes()[:4] == PNG_MAGIC


def test_plot_errors(tmp_path, clusters):
    x, y = clusters(5, 2)
    with pytest.raises(ValueError, match=r"method must be one of \('pca', 'tsne'\)"):
        plot_embedding_2d(x, y, tmp_path / "a.png", method="umap")
    with pytest.raises(ValueError, match="must end in .png"):
        plot_embedding_2d(x, y, tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"keys \['acc'\] appear in no record; available keys: \['epoch', 'loss'\]"):
        plot_curves([{"epoch": 0, "loss": 1.0}], ["acc"], tmp_path / "c.png")
    with pytest.raises(ValueError, match="records is empty"):
        plot_curves([], ["loss"], tmp_path / "c.png")
