"""calibrate, visualize and the selection benchmark, run as a user runs them."""
import json

import pytest
from PIL import Image

from llava.tools import bench, bench_select, calibrate, visualize


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    Image.new("RGB", (300, 200), (200, 30, 30)).save(d / "a.png")
    Image.effect_noise((256, 256), 60).convert("RGB").save(d / "b.jpg")
    (d / "notes.txt").write_text("not an image")
    return d


def test_calibrate_writes_erank_avg(tiny_checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "cal.json"
    calibrate.main(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-folder", str(folder),
                    "--out", str(out), "--device", "cpu"])
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and len(result["per_image"]) == 2
    assert 1 <= result["erank_avg"] <= 576
    assert result["erank_avg"] == pytest.approx(sum(r["erank"] for r in result["per_image"]) / 2)
    # images named relative to the folder, recorded once: the file reads the same wherever the folder lives
    assert result["image_folder"] == str(folder)
    assert [r["image"] for r in result["per_image"]] == ["a.png", "b.jpg"]
    assert "erank_avg =" in capsys.readouterr().out


def test_calibrate_empty_folder_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        calibrate.main(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-folder", str(tmp_path)])
    assert e.value.code == 2 and "holds no images" in capsys.readouterr().err


def test_visualize_writes_one_panel_per_method(tiny_checkpoint, folder, tmp_path):
    out = tmp_path / "panel.png"
    visualize.main(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-file", str(folder / "a.png"),
                    "--methods", "agile,fastervlm,divprune", "--visual-token-num", "64", "--out", str(out),
                    "--device", "cpu"])
    sheet = Image.open(out)
    assert sheet.size[0] == 3 * 336 + 2 * 8 and sheet.size[1] > 336


def test_visualize_panel_dims_pruned_patches():
    view = Image.new("RGB", (336, 336), (200, 200, 200))
    panel = visualize.render_panel(view, [0, 575], 24, "t")
    top = visualize.TITLE_HEIGHT
    assert panel.getpixel((5, top + 5)) == (200, 200, 200)  # kept patch 0 (top-left)
    assert panel.getpixel((30, top + 5)) == (50, 50, 50)  # patch 1 dimmed
    assert panel.getpixel((330, top + 330)) == (200, 200, 200)  # kept patch 575 (bottom-right)


def test_visualize_bad_method(tiny_checkpoint, folder, capsys):
    with pytest.raises(SystemExit) as e:
        visualize.main(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-file", str(folder / "a.png"),
                        "--methods", "agile,bogus", "--visual-token-num", "8"])
    assert e.value.code == 2 and "bogus" in capsys.readouterr().err


def test_bench_runs_and_reports_identity(capsys):
    bench.main(["--n", "96", "--visual-token-num", "16", "--dim", "32", "--repeats", "1", "--tower", "none",
                "--device", "cpu"])
    out = capsys.readouterr().out
    assert "| agile |" in out and "| visionzip |" in out and out.count("identical: True") == 3


def test_bench_select_runs_and_reports_identity(capsys):
    bench_select.main(["--n", "96", "--visual-token-num", "16", "--dim", "64", "--batch-size", "2", "--repeats", "1",
                       "--device", "cpu"])
    out = capsys.readouterr().out
    assert "| agile |" in out and "| divprune |" in out and "speed-up" in out
    assert out.count("identical: True") == 3 and "identical: False" not in out
