"""avatar generate on the CPU with tiny guidance: recipes, checkpoints, resume, refusals."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from avatarcli.generate.checkpoint import checkpoint_path, unfinished_path
from avatarcli.generate.config import DensifyConfig, recipe
from avatarcli.generate.densify import Densifier
from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import tiny_components
from avatarcli.generate.losses import body_scale, head_geometry
from avatarcli.generate.trainer import Trainer
from avatarcli.model import avatar_file
from avatarcli.model.binding import rest_posed
from avatarcli.signals import Interrupted

from helpers import run_cli, train_and_write

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(CPU)


def _guide(tiny, score):
    return DiffusionGuidance(tiny, GuidanceConfig(score=score, resolution=64))


def _cfg(kind, steps=6, **kw):
    cfg = recipe(kind, "a knight in armour", steps=steps, batch=2, resolution=64, checkpoint_every=3, **kw)
    cfg.densify = DensifyConfig(start=2, stop=6, every=2, grad_threshold=1e-9)  # grow every time
    return cfg


@pytest.mark.parametrize("kind, score", [("head", "nfsd"), ("body", "asd")])
def test_recipes_run_and_write_the_avatar(kind, score, tiny, head_avatar, body_avatar, head_template, body_template, tmp_path):
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    out = tmp_path / f"{kind}.avatar"
    seen = []
    result = train_and_write(av, tpl, _guide(tiny, score), _cfg(kind), out, on_step=lambda r: seen.append(r.stage))
    assert out.exists() and checkpoint_path(out).exists()
    back = avatar_file.load(out)
    assert back.meta["stage"] == "generated" and back.meta["prompt"] == "a knight in armour"
    assert len(back) == len(result) and len(back) != len(av)  # densification changed the count
    assert not torch.equal(back.gaussians.sh[: len(av)], av.gaussians.sh[: len(back)][: len(av)])
    if kind == "body":
        assert seen[:2] == ["canonical", "canonical"] and seen[-1] == "animate"
        assert back.binding.residual is not None  # residual skinning weights learnt in the animate stage
    else:
        assert set(seen) == {"animate"}


def test_a_body_run_that_starts_animated_learns_residual_weights(tiny, body_avatar, body_template):
    trainer = Trainer(body_avatar, body_template, _guide(tiny, "asd"), _cfg("body", stages=("animate",)))
    assert trainer.model.residual is not None and "residual" in trainer.extra_optimizers
    before = [p.detach().clone() for p in trainer.model.residual.parameters()]
    trainer.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.residual.parameters(), strict=True))
    canonical = Trainer(body_avatar, body_template, _guide(tiny, "asd"), _cfg("body", stages=("canonical",)))
    assert canonical.model.residual is None


def test_checkpoints_leave_the_trainers_state_alone(tiny, body_avatar, body_template, tmp_path):
    """Writing a checkpoint hands out a snapshot: the trainer's residual network is not the
    saved avatar's, and moving or editing the snapshot leaves the trainer as it was."""
    trainer = Trainer(body_avatar, body_template, _guide(tiny, "asd"), _cfg("body", stages=("animate",)))
    own = trainer.model.residual
    trainer.train_step()
    trainer.save(tmp_path / "b.avatar")
    snap = trainer.avatar()
    assert snap.binding.residual is not own and trainer.model.residual is own
    snap.to("meta")
    snap.binding.residual.to("meta")
    with torch.no_grad():
        snap.gaussians.means.zero_()
    assert all(p.device == trainer.device for p in own.parameters())
    assert not bool((trainer.model.params["means"] == 0).all())
    trainer.train_step()  # still trains: nothing was moved away from it


class _SignalDuringStep:
    """A guidance that sends this process a signal from inside the loss of call ``at``: an
    interruption in the middle of a step, where Ctrl-C usually lands."""

    def __init__(self, guidance, at: int, signum: int) -> None:
        self.inner, self.at, self.signum, self.calls = guidance, at, signum, 0
        self.name, self.resolution = guidance.name, guidance.resolution

    def wants_conditions(self):
        return self.inner.wants_conditions()

    def loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.inner.loss(*args, **kwargs)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_resumes_exactly(signum, tiny, head_avatar, head_template, tmp_path):
    """Ctrl-C or SIGTERM mid-step finishes the step, checkpoints it, and stops; resuming gives
    exactly the avatar an uninterrupted run gives (periodic checkpoints every 3 steps, the
    interruption in step 5)."""
    straight = train_and_write(head_avatar, head_template, _guide(tiny, "sds"), _cfg("head"), tmp_path / "a.avatar")
    out = tmp_path / "b.avatar"
    earlier = b"the user's avatar from an earlier run"
    out.write_bytes(earlier)
    with pytest.raises(Interrupted):
        train_and_write(head_avatar, head_template, _SignalDuringStep(_guide(tiny, "sds"), 5, signum), _cfg("head"), out)
    # the step under way was finished and saved, beside the output: only a finished run writes the output itself
    assert avatar_file.load(unfinished_path(out)).meta["stage"] == "animate@5"
    assert out.read_bytes() == earlier  # the user's file is as it was until the run finishes
    resumed = train_and_write(head_avatar, head_template, _guide(tiny, "sds"), _cfg("head"), out, resume=True)
    assert out.read_bytes() != earlier and not unfinished_path(out).exists()
    assert len(resumed) == len(straight)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(resumed.gaussians, name), getattr(straight.gaussians, name)), name


@pytest.fixture
def two_threads():
    """Torch on two threads (the CPU's parallel kernels then run in parallel), as on most machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_a_step_adds_up_its_gradients_in_the_same_order_every_time(two_threads, tiny, head_avatar, head_template):
    """The same step from the same state gives bitwise the same gradients in another trainer.
    On two threads the CPU used to add them up in an order that depended on where the tensors
    lay in memory, so a run resumed from a checkpoint drifted away from the uninterrupted run
    (quaternions by 0.1 in 20 steps: Adam makes whole steps of last-bit differences)."""
    av = head_avatar.select(torch.arange(0, len(head_avatar), 4))
    grads = []
    for _ in range(2):
        trainer = Trainer(av, head_template, _guide(tiny, "sds"), _cfg("head"))
        trainer.train_step()
        grads.append({k: p.grad.clone() for k, p in trainer.model.params.items() if p.grad is not None})
    assert sorted(grads[0]) == ["means", "opacities", "quats", "scales", "sh"]
    for k in grads[0]:
        assert torch.equal(grads[0][k], grads[1][k]), k


def test_a_killed_run_resumes_from_its_periodic_checkpoint_exactly(two_threads, tiny, head_avatar, head_template, tmp_path):
    """A run killed after its periodic checkpoint (step 3 of 6; nothing is saved on the way
    out, as with SIGKILL) and resumed by a new trainer gives exactly the avatar an uninterrupted
    run gives, densification on the way included. On two threads the CPU used to add gradients
    up in a different order in every run, and Adam made whole steps of the differences."""

    class KilledError(Exception):
        pass

    def killed_in_step_5(report):
        if report.step == 5:
            raise KilledError

    av = head_avatar.select(torch.arange(0, len(head_avatar), 4))
    straight = train_and_write(av, head_template, _guide(tiny, "sds"), _cfg("head"), tmp_path / "a.avatar")
    out = tmp_path / "b.avatar"
    with pytest.raises(KilledError):
        train_and_write(av, head_template, _guide(tiny, "sds"), _cfg("head"), out, on_step=killed_in_step_5)
    assert avatar_file.load(unfinished_path(out)).meta["stage"] == "animate@3" and not out.exists()
    resumed = train_and_write(av, head_template, _guide(tiny, "sds"), _cfg("head"), out, resume=True)
    assert len(resumed) == len(straight)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(resumed.gaussians, name), getattr(straight.gaussians, name)), name


def test_resume_refuses_a_different_run(tiny, head_avatar, head_template, tmp_path):
    out = tmp_path / "c.avatar"
    train_and_write(head_avatar, head_template, _guide(tiny, "sds"), _cfg("head", steps=2), out)
    other = recipe("head", "a different prompt", steps=2, batch=2, resolution=64)
    trainer = Trainer(head_avatar, head_template, _guide(tiny, "sds"), other)
    from avatarcli.errors import AvatarError

    with pytest.raises(AvatarError, match="different run"):
        trainer.restore(checkpoint_path(out))


def test_clones_and_splits_inherit_the_binding(tiny, head_avatar, head_template):
    trainer = Trainer(head_avatar, head_template, _guide(tiny, "sds"), _cfg("head"))
    n = len(trainer.model.params["means"])
    d = Densifier(DensifyConfig(grad_threshold=0.0, clone_scale=1e9, prune_opacity=0.0, max_gaussians=n + 10), trainer.radius)
    d.state = {"grad2d": torch.ones(n), "count": torch.ones(n)}
    faces_before = trainer.model.params["binding_face_idx"].clone()
    cloned, _, _ = d.refine(trainer.model.params, trainer.optimizers, torch.zeros(n))
    assert cloned == 10
    faces = trainer.model.params["binding_face_idx"]
    assert len(faces) == n + 10 == len(trainer.model.params["means"])
    assert torch.equal(faces[n:], faces_before[:10])  # the clones sit on their parents' triangles


def test_head_regulariser_pulls_only_strays(head_template, head_avatar):
    g = head_avatar.gaussians
    means = g.means.clone().requires_grad_(True)
    from avatarcli.model.gaussians import Gaussians

    rest = rest_posed(head_template)
    loss = head_geometry(
        Gaussians(means, g.log_scales, g.quats, g.opacity_logits, g.sh), head_avatar.binding, head_template, rest, 0.1, 0.1
    )
    loss.backward()
    from avatarcli.model.binding import _frames

    centers, _, _, affine = _frames(rest.vertices, head_template.faces)
    tri = rest.vertices[0, head_template.faces]
    tau = (tri - centers[0, :, None]).norm(dim=-1).max(-1).values[head_avatar.binding.face_idx]
    offset = (affine[0, head_avatar.binding.face_idx] @ means.detach()[..., None])[..., 0].norm(dim=-1)
    inside = offset < 0.5 * tau
    assert inside.float().mean() > 0.2
    assert means.grad[inside].abs().sum() == 0  # within tolerance of their triangle: left alone
    assert (means.grad[~inside].abs().sum(-1) > 0).all()
    far = means.detach().clone()
    far[:, 1] += 5.0  # far along the normal
    far.requires_grad_(True)
    loss = head_geometry(Gaussians(far, g.log_scales, g.quats, g.opacity_logits, g.sh), head_avatar.binding, head_template, rest, 0.1, 0.1)
    loss.backward()
    assert (far.grad[:, 1] > 0).float().mean() > 0.99  # pulled back towards the surface


def test_body_scale_regulariser():
    from avatarcli.model.gaussians import Gaussians

    log_scales = torch.log(torch.tensor([[0.005, 0.004, 0.002], [0.03, 0.01, 0.01]]))
    g = Gaussians(torch.zeros(2, 3), log_scales, torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 1, 3))
    assert abs(float(body_scale(g, 0.01)) - 0.01) < 1e-6  # mean of (0, 0.03 - 0.01)


@pytest.mark.parametrize(
    "args, message",
    [
        (("", "--guidance", "tiny"), "prompt is empty"),
        (("x", "--model", "tail", "--guidance", "tiny"), "unknown model"),
        (("x", "--guidance", "tiny", "--steps", "0"), "steps must be positive"),
        (("x", "--guidance", "tiny", "--resolution", "100"), "multiple of 8"),
        pytest.param(
            ("x", "--guidance", "tiny", "--device", "cuda"),
            "CUDA",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none"),
        ),
        (("x", "--guidance", "magic"), "unknown guidance"),
        (("x", "--guidance", "tiny", "--resume"), "no checkpoint"),
        (("x", "--guidance", "tiny", "--stages", "canonical,dance"), "unknown stage"),
        (("x", "--guidance", "tiny", "--score", "vsd"), "unknown score"),
        (("x", "--guidance", "tiny", "--control-scale", "-1"), "ControlNet strength must be"),
        (("x", "--guidance", "tiny", "--control-scale", "nan"), "ControlNet strength must be"),
        (("x", "--guidance", "tiny", "--cfg", "inf"), "guidance scale must be"),
        (("x", "--guidance", "tiny", "--encoder", "madebyollin/taesd"), "encoder applies"),
    ],
)
def test_bad_generate_input(tmp_path, args, message):
    out = tmp_path / "g.avatar"
    r = run_cli("generate", *args, "-o", str(out))
    assert r.code == 2 and message in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr  # one line, nothing before it
    assert not out.exists() and not checkpoint_path(out).exists()


def test_from_of_the_wrong_kind(tmp_path, body_avatar):
    src = tmp_path / "body.avatar"
    avatar_file.save(body_avatar, src)
    r = run_cli("generate", "x", "--model", "head", "--from", str(src), "--guidance", "tiny", "-o", str(tmp_path / "g.avatar"))
    assert r.code == 2 and "body avatar" in r.stderr


def test_cli_generate_tiny(tmp_path):
    out = tmp_path / "k.avatar"
    r = run_cli("generate", "Kratos", "--guidance", "tiny", "--steps", "2", "--batch", "1", "--resolution", "32", "-k", "1",
                "--preview-every", "2", "-o", str(out))  # fmt: skip
    assert r.code == 0, r.stderr
    assert "noise" in r.stderr  # the warning about random weights
    av = avatar_file.load(out)
    assert av.meta["prompt"] == "Kratos" and "generate" in av.meta["history"][-1]["command"]
    assert (tmp_path / "k.previews" / "step_000002.png").exists()


def test_generate_from_an_avatar_takes_its_kind(body_avatar, tmp_path):
    """`--from body.avatar` without `--model` trains a body; a contradicting `--model` is refused."""
    start = tmp_path / "b.avatar"
    avatar_file.save(body_avatar, start)
    out = tmp_path / "g.avatar"
    tiny = ("--guidance", "tiny", "--steps", "1", "--batch", "1", "--resolution", "32", "--checkpoint-every", "0")
    r = run_cli("generate", "x", "--from", str(start), *tiny, "-o", str(out))
    assert r.code == 0, r.stderr
    assert avatar_file.load(out).kind == "body"
    r = run_cli("generate", "x", "--from", str(start), "--model", "head", *tiny, "-o", str(tmp_path / "h.avatar"))
    assert r.code == 2 and "body avatar but the model kind is head" in r.stderr, r.stderr


def test_an_output_named_like_a_runs_unfinished_avatar_is_refused(tmp_path):
    """x.unfinished.avatar is where a run writing x.avatar keeps its avatar so far (and removes
    it when done): a finished avatar there would be overwritten, then deleted."""
    out = tmp_path / "k.unfinished.avatar"
    r = run_cli("generate", "x", "--guidance", "tiny", "-o", str(out))
    assert r.code == 2 and "runs keep their avatar so far" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kind, options, want",
    [
        ("head", {}, ("nfsd", 7.5, 1.5)),  # HeadStudio: NFSD at 7.5, the face ControlNet at 1.5
        ("body", {}, ("asd", 7.5, 1.0)),
        ("head", {"score": "sds"}, ("sds", 50.0, 1.5)),  # each score brings its own scale
        ("body", {"cfg_scale": 12.0, "control_scale": 0.8}, ("asd", 12.0, 0.8)),
    ],
)
def test_generate_hands_the_guidance_its_scales(kind, options, want, tmp_path, monkeypatch):
    """What ``avatar generate`` gives the guidance: the score, its guidance scale and the
    ControlNet strength, from the recipe unless an option says otherwise."""
    from avatarcli import api

    seen = []
    init = DiffusionGuidance.__init__

    def record(self, components, config):
        seen.append((config.score, config.scale, config.conditioning_scale))
        init(self, components, config)

    monkeypatch.setattr(DiffusionGuidance, "__init__", record)
    o = api.GenerateOptions(model=kind, guidance="tiny", steps=1, batch=1, resolution=32, checkpoint_every=0, points_per_triangle=1,
                            device="cpu", **options)  # fmt: skip
    api.generate("x", tmp_path / "g.avatar", o)
    assert seen == [want]


def test_head_positions_learn_at_headstudios_decaying_rate(tiny, head_avatar, head_template):
    """HeadStudio's code: 5e-5 x 4 = 2e-4, halving exponentially over 30 000 steps, then held;
    scales 5e-3, rotations 1e-3. Bodies keep a constant position rate."""
    lr = recipe("head", "x").lr
    assert (lr.position, lr.scale, lr.rotation, lr.color, lr.opacity, lr.shape) == (2e-4, 5e-3, 1e-3, 1.25e-2, 1e-2, 1e-3)
    assert lr.position_at(0) == 2e-4 and abs(lr.position_at(10_000) / (2e-4 * 0.5 ** (1 / 3)) - 1) < 1e-12
    assert lr.position_at(30_000) == lr.position_at(90_000) == 1e-4
    body = recipe("body", "x").lr
    assert body.position_at(0) == body.position_at(9_000) == 1e-4
    trainer = Trainer(head_avatar, head_template, _guide(tiny, "nfsd"), _cfg("head"))
    for _ in range(3):
        trainer.train_step()
    assert trainer.optimizers["means"].param_groups[0]["lr"] == lr.position_at(2) < 2e-4  # the rate the last step used


def test_recipes_train_on_the_papers_backgrounds():
    """Heads on black (HeadStudio's code), bodies on grey (DreamWaltz-G's Gaussian stages)."""
    assert recipe("head", "x").background == (0.0, 0.0, 0.0)
    assert recipe("body", "x").background == (0.5, 0.5, 0.5)
