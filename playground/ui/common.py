"""Shared UI helpers: user errors -> ``gr.Error``, display scaling, theme and CSS."""
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from ..core.errors import UserInputError
from ..core.images import for_display

log = logging.getLogger("playground")

CSS = """
.pixelated img, img.pixelated { image-rendering: pixelated; image-rendering: crisp-edges; }
.equation { font-size: 0.95em; }
.equation .katex-display { overflow-x: auto; overflow-y: hidden; }
.lesson-intro { max-width: 60em; }
.figure-note { color: var(--body-text-color-subdued); font-size: 0.85em; }
"""

# System fonts only: no font is fetched from the network (the app must work offline).
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])

# $...$ inline and $$...$$ display maths in every lesson text
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def md(text: str, **kwargs: Any) -> gr.Markdown:
    """Lesson text with LaTeX."""
    return gr.Markdown(text, latex_delimiters=LATEX, **kwargs)


def user_errors(fn: Callable) -> Callable:
    """Show :class:`UserInputError` as a ``gr.Error`` toast; log anything else and show a short,
    honest message (the server keeps serving everyone else either way). Works for generators."""

    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, UserInputError):      # the visitor's to fix, not the server's: no traceback in the log
            return gr.Error(str(exc), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong on our side ({type(exc).__name__}); please try again.")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message
                raise convert(exc) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            raise convert(exc) from exc
    return wrapper


show = for_display  # every tab displays results through the same helper


NOTE_REFRESH_SECONDS = 2.0


def model_note(service: Any, elem_id: str, also: list[tuple[Any, Callable[[], Any]]] = ()) -> gr.Markdown:
    """The tab header's note about its models (``service.header_note()``: what is still loading, with its
    progress; which model serves instead of a configured one, and why), read again at every page load and,
    while something loads, every two seconds (a timer that switches itself off). ``also``: more
    (component, value function) pairs refreshed with it (e.g. the pipeline diagram once the model is in)."""
    note = md(service.header_note, elem_id=elem_id)
    if not any(s.hub_models() for s in (service, *service.depends_on())):
        return note                                # nothing configured: nothing loads in the background
    timer = gr.Timer(NOTE_REFRESH_SECONDS, active=True)
    comps = [c for c, _ in also]

    def refresh():
        busy = any(s.loading() for s in (service, *service.depends_on()))
        return (service.header_note(), *(fn() for _, fn in also), gr.Timer(active=busy))

    timer.tick(refresh, None, [note, *comps, timer], api_visibility="private", show_progress="hidden",
               queue=False)
    return note
