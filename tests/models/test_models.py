"""One contract test over every registered model, plus model-specific checks."""

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

import noisytail.models  # noqa: F401  (registers the models)
from noisytail.models import Backbone, ResNet18, load_imagenet_state
from noisytail.registry import MODELS, RegistryError

# name -> (input_shape, batch): small inputs keep the tests fast
SHAPES = {
    "small_cnn": ((1, 28, 28), 4),
    "preact_resnet18": ((3, 32, 32), 2),
    "resnet32": ((3, 32, 32), 2),
    "resnet18": ((3, 32, 32), 2),
    "resnet50": ((3, 32, 32), 2),
    "mlp": ((20,), 4),
}


def build(name, num_classes=5, **options):
    shape = SHAPES[name][0]
    return MODELS.build(name, options, num_classes=num_classes, input_shape=shape)


def test_every_model_has_a_shape_here():
    assert set(MODELS.names()) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_contract(name):
    torch.manual_seed(0)
    shape, b = SHAPES[name]
    model = build(name).eval()
    assert isinstance(model, Backbone)
    assert isinstance(model.head, torch.nn.Linear)
    assert model.head.in_features == model.feature_dim
    x = torch.randn(b, *shape)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (b, 5)
    assert feats.shape == (b, model.feature_dim)
    torch.testing.assert_close(logits, model.head(feats))
    model.reset_head(7)
    assert model.head.out_features == 7
    with torch.no_grad():
        assert model(x).shape == (b, 7)


@pytest.mark.parametrize("name", [n for n in sorted(SHAPES) if len(SHAPES[n][0]) == 3])
def test_channels_last_input(name):
    torch.manual_seed(0)
    shape, b = SHAPES[name]
    model = build(name).eval()
    x = torch.randn(b, *shape)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts():
    assert n_params(build("preact_resnet18", num_classes=10)) == pytest.approx(11.17e6, rel=0.01)
    assert n_params(build("resnet32", num_classes=10)) == pytest.approx(0.464e6, rel=0.01)
    assert n_params(build("resnet18", num_classes=10)) == pytest.approx(11.18e6, rel=0.01)
    assert build("resnet50").feature_dim == 2048
    assert build("small_cnn", width=16).feature_dim == 32


def test_resnet32_option_a_shortcut_has_no_parameters():
    model = build("resnet32")
    assert not any("shortcut" in name for name, _ in model.named_parameters())


def test_preact_variants():
    l2b, moit = build("preact_resnet18"), build("preact_resnet18", variant="moit")
    assert n_params(moit) == n_params(l2b) + 128  # the stem's BatchNorm
    assert n_params(build("preact_resnet18", variant="dividemix")) == n_params(moit)
    with pytest.raises(ValueError, match="variant"):
        build("preact_resnet18", variant="resnet")


@pytest.mark.parametrize(
    "variant,preactivated", [("l2b", False), ("moit", True), ("dividemix", True)]
)
def test_preact_identity_shortcut_of_each_papers_code(variant, preactivated):
    """The identity shortcut adds the block's input (L2B's code) or its pre-activation
    ``relu(bn1(x))`` (MOIT's and DivideMix's: an empty nn.Sequential applied to it); a skip has
    no parameters, so only the block's output shows which."""
    torch.manual_seed(0)
    model = build("preact_resnet18", variant=variant).eval()
    block = model.stages[0][1]  # 64 -> 64, stride 1: an identity shortcut
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 64, 8, 8)
        pre = torch.relu(block.bn1(x))
        residual = block.conv2(torch.relu(block.bn2(block.conv1(pre))))
        want = residual + (pre if preactivated else x)
        assert torch.allclose(block(x), want, atol=1e-5)


def test_preact_resnet18_on_gray_28x28_in_bf16():
    """Issue 15's capacity axis: MOIT's PreAct ResNet-18 on Fashion-MNIST as it is (1 x 28 x 28,
    no resize): the stages give 28 -> 14 -> 7 -> 4, pooled to 512-d; trains under bf16 autocast."""
    torch.manual_seed(0)
    model = MODELS.build(
        "preact_resnet18", {"variant": "moit"}, num_classes=10, input_shape=(1, 28, 28)
    )
    x = torch.randn(4, 1, 28, 28)
    assert model.stages(model.stem(x)).shape == (4, 512, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, logits = model.features(x), model(x)
    assert feats.shape == (4, 512) and logits.shape == (4, 10)
    assert logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float(), torch.arange(4)).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_other_input_shapes():
    gray = MODELS.build("resnet18", {"cifar_stem": True}, num_classes=3, input_shape=(1, 28, 28))
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    small = MODELS.build("small_cnn", {}, num_classes=3, input_shape=(3, 9, 13))
    assert small(torch.randn(2, 3, 9, 13)).shape == (2, 3)
    with pytest.raises(ValueError):
        MODELS.build("small_cnn", {}, num_classes=3, input_shape=(784,))
    linear = MODELS.build("mlp", {"hidden": []}, num_classes=3, input_shape=(6,))
    assert linear.feature_dim == 6 and n_params(linear) == 6 * 3 + 3


def test_cifar_stem_keeps_resolution():
    plain, cifar = build("resnet18"), build("resnet18", cifar_stem=True)
    assert isinstance(cifar.net.maxpool, torch.nn.Identity)
    assert cifar.net.conv1.kernel_size == (3, 3) and cifar.net.conv1.stride == (1, 1)
    assert plain.net.conv1.kernel_size == (7, 7)


def test_unknown_option_is_an_error():
    with pytest.raises(RegistryError, match="Did you mean 'width'"):
        build("small_cnn", widht=8)


def test_pretrained_loads_weights_and_xavier_head(monkeypatch):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in reference.items()}

    monkeypatch.setattr(
        "noisytail.models.torchvision_resnet.load_imagenet_state", lambda name: dict(state)
    )
    model = ResNet18(num_classes=3, input_shape=(3, 32, 32), pretrained=True)
    torch.testing.assert_close(model.net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert torch.all(model.head.bias == 0)
    gray = ResNet18(num_classes=3, input_shape=(1, 32, 32), pretrained=True)
    rgb_mean = state["conv1.weight"].mean(dim=1, keepdim=True)
    torch.testing.assert_close(gray.net.conv1.weight, rgb_mean * 3.0)


def test_pretrained_without_network_raises_clearly(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    from torchvision.models import ResNet18_Weights

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="pretrained=False"):
        load_imagenet_state("ResNet18_Weights.IMAGENET1K_V1")


def test_small_cnn_learns_a_tiny_batch():
    torch.manual_seed(0)
    model = build("small_cnn", width=8)
    x = torch.randn(16, 1, 28, 28)
    y = torch.arange(16) % 5
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_functional_call_for_look_ahead():
    """The meta-learning methods take a differentiable virtual step with torch.func."""
    torch.manual_seed(0)
    model = build("resnet32")
    params = dict(model.named_parameters())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    stepped = {n: p - 0.1 * g for (n, p), g in zip(params.items(), grads)}
    meta = F.cross_entropy(torch.func.functional_call(model, stepped, (x,)), y)
    (meta_grad,) = torch.autograd.grad(meta, [params["head.weight"]])
    assert torch.isfinite(meta_grad).all()


def test_torchvision_is_imported_only_when_a_torchvision_model_is_built():
    # its import costs about 1.6 s of every command's start-up; a table never needs it
    import subprocess
    import sys

    code = (
        "import sys, noisytail.cli, noisytail.train, noisytail.models, noisytail.detect; "
        "print('torchvision' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
