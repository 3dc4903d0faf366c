"""Training curves as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(path: Path, history: list[dict], panels: dict[str, list[str]]) -> None:
    """One subplot per panel, each drawing the listed keys of ``history`` (one dict per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    axes = axes if len(panels) > 1 else [axes]
    epochs = [h["epoch"] for h in history]
    for ax, (title, keys) in zip(axes, panels.items()):
        for key in keys:
            ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
