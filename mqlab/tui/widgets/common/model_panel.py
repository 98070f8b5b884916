"""A panel that draws one live model and repaints only when the model changed."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from rich.console import RenderableType
from textual.widgets import Static


class Versioned(Protocol):
    """A model that counts its changes."""

    @property
    def version(self) -> int: ...


ModelT = TypeVar("ModelT", bound=Versioned)


class ModelPanel(Static, Generic[ModelT]):
    """Draws ``view`` with :meth:`render_view`; :meth:`redraw` is cheap when nothing moved,
    so a screen can call it every frame."""

    def __init__(self, view: ModelT, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.view = view
        self._drawn = -1

    def on_mount(self) -> None:
        self.redraw()

    def render_view(self) -> RenderableType:
        """The model as a rich renderable (each panel's own drawing)."""
        raise NotImplementedError

    def redraw(self) -> None:
        """Repaint if the model moved since the last paint."""
        if self.view.version != self._drawn:
            self._drawn = self.view.version
            self.update(self.render_view())
