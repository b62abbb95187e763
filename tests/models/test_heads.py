import torch
from torch import nn

from core.models.heads import Standardiser


def test_folded_head_gives_the_same_logits_on_raw_features():
    torch.manual_seed(0)
    x = torch.randn(64, 32) * torch.logspace(-3, 2, 32) + 5.0  # channels of very different scale and offset
    norm = Standardiser.fit(x)
    z = norm(x)
    assert torch.allclose(z.mean(0), torch.zeros(32), atol=1e-2)
    spread = z.std(0, unbiased=False)  # unit above the median deviation; near-constant channels are not blown up
    assert torch.allclose(spread[16:], torch.ones(16), atol=1e-2) and (spread[:8] < 0.1).all()
    head = nn.Linear(32, 3)
    expected = head(z)
    norm.fold_into(head)
    assert torch.allclose(head(x), expected, atol=1e-3)
    norm.unfold_from(head)  # and back: a head made for raw features, on standardised ones
    assert torch.allclose(head(z), expected, atol=1e-3)


def test_standardised_probe_finds_the_class_signal_beside_loud_channels():
    """One informative channel of unit scale beside 8 noisy channels 300x louder and 8 near-constant ones: a few
    epochs of the head find it only on standardised features (what the probe regime trains on)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.cat([torch.randn(200, 8, generator=g) * 300.0, torch.randn(200, 8, generator=g) * 1e-3,
                   torch.zeros(200, 1)], 1)[:, :16].contiguous()
    x[:, 15] = (y.float() * 2 - 1) + torch.randn(200, generator=g) * 0.2

    def fit(features: torch.Tensor) -> float:
        torch.manual_seed(0)
        head = nn.Linear(16, 2)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
        for _ in range(8):
            for i in range(0, 200, 16):
                loss = nn.functional.cross_entropy(head(features[i:i + 16]), y[i:i + 16])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return (head(features).argmax(1) == y).float().mean().item()

    assert fit(Standardiser.fit(x)(x)) > 0.95
    assert fit(x) < 0.8
