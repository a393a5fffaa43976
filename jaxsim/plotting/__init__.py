"""Figures from saved results only."""
from pathlib import Path

from jaxsim import results


def save(fig, out: Path, name: str, rect: tuple = (0, 0, 1, 1)) -> Path:
    """Lay out, write DIR/figures/NAME as a PNG and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    path = Path(out) / results.FIGURES / name
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
