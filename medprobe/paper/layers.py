"""The authors' layer numbering and medprobe's.

The authors' ``activation.py`` saves ``out.hidden_states[1:]`` (the embedding output is not
saved) as one file per decoder block, ``<entity>.<l>.pt`` for ``l = 0 .. N-1``; file ``l``
holds ``hidden_states[l + 1]``, the output of decoder block ``l + 1``. Their probe
(``eval_torch_ex.py``, ``load_act``) loads "layer ``i``" as ``sorted(glob("*.pt"))[i]``: a
*lexicographic* sort of the file names, ``.0 .1 .10 .11 … .19 .2 .20 … .29 .3 .30 …``. So the
authors' layer ``i`` is file ``authors_file_order(N)[i]``, i.e. ``hidden_states`` index
``authors_file_order(N)[i] + 1``. Their "layer 32" of the 80B (N = 80 decoder blocks) is file
``.38.pt`` = ``hidden_states[39]``; a per-layer sweep in their index order (the paper's Fig. S5)
visits blocks 1, 2, 11, 12, …, 20, 3, 21, … — not in depth order.

medprobe's own numbering (:mod:`medprobe.extractors.base`) is the ``hidden_states`` index:
0 = embedding output, ``k`` = output of decoder block ``k``; it does not change here.
"""

from __future__ import annotations


def _check(n_blocks: int) -> int:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive int, got {n_blocks!r}")
    return n_blocks


def authors_file_order(n_blocks: int) -> list[int]:
    """File numbers ``l`` in the order ``sorted(glob("*.pt"))`` lists ``<entity>.<l>.pt``.

    Args:
        n_blocks: decoder blocks of the model (80 for IDEFICS-80B, 32 for IDEFICS-9B).

    Returns:
        a permutation of ``range(n_blocks)``; element ``i`` is the file the authors' layer
        ``i`` loads.

    Raises:
        ValueError: ``n_blocks`` is not a positive int.
    """
    n = _check(n_blocks)
    # every name shares "<entity>." and ".pt": the sort is decided by the digits then ".",
    # and "." (0x2e) sorts before every digit, so "1.pt" < "10.pt" < "2.pt"
    return sorted(range(n), key=lambda layer: f"{layer}.pt")


def authors_to_hidden_state(authors_layer: int, n_blocks: int) -> int:
    """medprobe's layer (``hidden_states`` index) that the authors' layer ``authors_layer`` is.

    ``authors_to_hidden_state(32, 80) == 39`` (IDEFICS-80B, the paper's layer);
    ``authors_to_hidden_state(0, n) == 1`` for any depth (file ``.0.pt`` = block 1).

    Raises:
        ValueError: ``authors_layer`` outside ``0 .. n_blocks - 1``.
    """
    order = authors_file_order(n_blocks)
    if isinstance(authors_layer, bool) or not 0 <= int(authors_layer) < n_blocks:
        raise ValueError(f"authors' layer must be in 0..{n_blocks - 1}, got {authors_layer!r}")
    return order[int(authors_layer)] + 1


def hidden_state_to_authors(layer: int, n_blocks: int) -> int:
    """The authors' layer index of medprobe's layer ``layer`` (inverse of
    :func:`authors_to_hidden_state`); ``hidden_state_to_authors(39, 80) == 32``.

    Raises:
        ValueError: ``layer`` outside ``1 .. n_blocks`` (the embedding output, layer 0, was
            never saved by the authors).
    """
    order = authors_file_order(n_blocks)
    if isinstance(layer, bool) or not 1 <= int(layer) <= n_blocks:
        raise ValueError(
            f"layer {layer!r} has no authors' index: they saved blocks 1..{n_blocks} only"
        )
    return order.index(int(layer) - 1)
