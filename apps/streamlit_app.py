"""attend in the browser: caption an image, see where each word looked, ask a question; on a
second page (``apps/charlm_page.py``), the character model's samples and interpretable cells.

Started by ``attend app`` (or ``streamlit run apps/streamlit_app.py``). UI only: the models
come from ``captioner.inference`` / ``vqa.inference`` and the plain helpers from
``apps.app_logic``. User and model text is escaped Markdown, never raw HTML nor a link.

Everything a run builds is local to ``main()``: the script's globals hold only functions and
constants, so a widget's callback (which keeps the script's globals) keeps no picture alive.
A session keeps its picture small (``app_logic.remember_picture``: at most 1024 px, as PNG
bytes). The *Checkpoint file* box loads only the shipped models and files inside the models
folder: ``runs/`` in the working directory, or the folder named by ``ATTEND_MODELS_DIR``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from apps import app_logic as logic
from apps import charlm_page
from core.errors import AttendError

TILE = 200  # px of the longer side of a word's tile in the grid of every word
LARGE = 384  # px of the selected word's overlay (drawn at this size: a smooth map)
GLIMPSE = 256  # px of each VQA glimpse
PER_ROW = 5  # word tiles per row
PAGES = {"images": "Images: caption and ask", "charlm": "Character model"}

st.set_page_config(page_title="attend: show, attend, tell and answer", layout="wide")
logic.use_server_threads()


# ---------------------------------------------------------------- models (loaded once per process)


@st.cache_resource(show_spinner="Loading the captioner...", max_entries=4)
def get_captioner(source: str | None, stamp: tuple):
    from captioner.inference import Captioner

    captioner = Captioner.load(source)
    size = captioner.encoder.config.image_size
    # Warm-up (first decode, matplotlib's colour maps): the first real caption is then as fast as any.
    warm = captioner.caption([Image.new("RGB", (size, size), "white")], beam_size=3)[0]
    logic.attention_overlays(warm.image, warm.attention, TILE)
    return captioner


@st.cache_resource(show_spinner="Loading the VQA model...", max_entries=4)
def get_answerer(source: str | None, stamp: tuple):
    from vqa.inference import Answerer

    answerer = Answerer.load(source)
    size = answerer.encoder.config.image_size
    answerer.encode([Image.new("RGB", (size, size), "white")])  # warm-up
    return answerer


@st.cache_data(max_entries=32, show_spinner=False)
def caption_image(model: tuple, digest: str, beam_size: int, _captioner, _image):
    return _captioner.caption([_image], beam_size=beam_size, names=["image"])[0]


@st.cache_data(max_entries=64, show_spinner=False)
def answer_question(model: tuple, digest: str, question: str, choices: tuple, allow_unknown: bool, _answerer, _image):
    """The answer dict, or {"error": message} for a question, image or choices the model cannot use.
    ``choices``: candidate answers to rank (multiple choice), () for open-ended; ``allow_unknown``:
    answer despite unknown content words (withheld otherwise)."""
    try:
        return _answerer.ask_one(_image, question, top_k=5, choices=list(choices) or None, allow_unknown=allow_unknown)
    except AttendError as e:
        return {"error": str(e)}


def trained_on(model) -> str:
    """What a loaded model was trained on, in a word ("scenes", "easy-vqa", "coco"), or ""."""
    return str(model.checkpoint.get("data", {}).get("source", ""))


@st.cache_data(show_spinner=False)
def samples():
    return logic.gallery()


@st.cache_data(show_spinner=False)
def legend():
    return logic.colour_bar()


def load_model(kind: str, names: dict, loader, choice: str, path_text: str, env_name: str, problems: list[str]):
    """(model, cache key, None) or (None, None, message saying why); errors go to ``problems``."""
    try:
        source = logic.model_source(choice, path_text, env_name, names=names)
    except logic.CheckpointRefused as e:  # the same words for every path outside the models folder
        message = f"{kind} not loaded: {e}."
        st.sidebar.error(message)
        problems.append(message)
        return None, None, message
    except ValueError as e:
        st.sidebar.info(str(e).capitalize())
        return None, None, f"{kind}: {e}."
    typed = logic.typed_path(path_text)
    stamp = logic.model_stamp(source)
    try:
        model = loader(source, stamp)
    except AttendError as e:
        reason = str(e).rstrip(".")
        if choice == "path":  # the visitor's words, not where the models folder is on the server
            reason = reason.replace(source, typed)
        message = f"{kind} not loaded. {logic.escape_markdown(reason)}."
        if choice != "path":
            message += " Choose *Checkpoint file* in the sidebar to load your own."
        st.sidebar.error(message)
        problems.append(message)
        return None, None, message
    if choice == "path":
        shown = typed
    elif source is None or source in names:
        shown = f"shipped {source or 'default'} model"
    else:
        shown = Path(source).name  # the operator's ATTEND_CAPTIONER / ATTEND_VQA, by file name only
    st.sidebar.caption(f"{kind}: {logic.escape_markdown(shown)}")
    return model, stamp, None


def sidebar(problems: list[str]) -> tuple:
    """The model choices; returns (captioner, its key, why not) and (answerer, its key, why not)."""
    st.sidebar.header("Models")
    caption_choice = st.sidebar.radio(
        "Captioner",
        ["default", "path"],
        key="captioner_choice",
        format_func={"default": "Shipped scenes captioner", "path": "Checkpoint file"}.get,
    )
    caption_path = (
        st.sidebar.text_input("Captioner checkpoint (.pt)", key="captioner_path", placeholder="runs/coco/best.pt")
        if caption_choice == "path"
        else ""
    )
    vqa_choice = st.sidebar.radio(
        "VQA model",
        ["default", "easy-vqa", "path"],
        key="vqa_choice",
        format_func={"default": "Shipped scenes VQA", "easy-vqa": "Shipped easy-VQA", "path": "Checkpoint file"}.get,
    )
    vqa_path = (
        st.sidebar.text_input("VQA checkpoint (.pt)", key="vqa_path", placeholder="runs/vqa/best.pt")
        if vqa_choice == "path"
        else ""
    )
    captioning = load_model(
        "Captioner",
        logic.shipped_models("captioner"),
        get_captioner,
        caption_choice,
        caption_path,
        logic.ENV_CAPTIONER,
        problems,
    )
    answering = load_model(
        "VQA model", logic.shipped_models("vqa"), get_answerer, vqa_choice, vqa_path, logic.ENV_VQA, problems
    )
    if "path" in (caption_choice, vqa_choice):
        st.sidebar.caption(logic.COCO_HOWTO)
    return captioning, answering


def choose_picture() -> logic.Picture | None:
    """The image of this run, small (at most 1024 px); the session keeps only its PNG bytes."""
    source = st.segmented_control(
        "Image", ["Upload", "Camera", "Samples"], default="Upload", required=True, key="image_source"
    )
    try:
        if source == "Upload":
            upload = st.file_uploader(
                f"Upload an image (JPEG, PNG or WebP, up to {logic.MAX_UPLOAD_MB} MB)",
                type=logic.UPLOAD_TYPES,
                max_upload_size=logic.MAX_UPLOAD_MB,
                key="upload",
            )
            if upload is not None:
                return logic.remember_picture(st.session_state, "picture", upload.getvalue(), upload.name)
        elif source == "Camera":
            photo = st.camera_input("Take a photo", key="camera")
            if photo is not None:
                return logic.remember_picture(st.session_state, "picture", photo.getvalue(), "camera photo")
        else:
            gallery = samples()
            st.caption(
                "Generated scenes (what the default captioner and VQA model know) and easy-VQA test "
                "images (for the easy-VQA model)."
            )
            for start in range(0, len(gallery), PER_ROW):
                columns = st.columns(PER_ROW)
                for i, column in zip(range(start, min(start + PER_ROW, len(gallery))), columns):
                    column.image(gallery[i].data, caption=logic.escape_markdown(gallery[i].label), width="stretch")
                    column.button(
                        "Use",
                        key=f"sample_{i}",
                        width="stretch",
                        on_click=logic.use_sample,  # brings its own VQA model (easy-VQA or scenes)
                        args=(st.session_state, i, gallery[i].kind),
                    )
            if "sample" in st.session_state:
                sample = gallery[st.session_state.sample]
                return logic.remember_picture(
                    st.session_state, "picture", sample.data, sample.label, questions=sample.questions
                )
            st.caption("Press *Use* under an image.")
    except AttendError as e:  # ImageError: not an image, truncated, too large
        st.error(f"That file cannot be used: {logic.escape_markdown(str(e))}")
    st.session_state.pop("picture", None)  # nothing chosen: the session keeps no picture
    return None


# ---------------------------------------------------------------- caption


def show_caption(picture: logic.Picture, captioner, captioner_key: tuple, captioner_error: str | None):
    """The caption with its notice and its maps; returns the ``CaptionResult`` (None without a captioner)."""
    st.header("Caption")
    if captioner is None:
        st.caption(f"No captioner is loaded. {captioner_error}")
        return None
    beam = st.columns([1, 2])[0].slider(
        "Beam size", 1, 5, 3, key="beam", help="How many partial captions the search keeps; 1 is greedy decoding."
    )
    result = caption_image(captioner_key, picture.digest, beam, captioner, picture.image)
    # The key names the image: the browser test waits for this caption, not the last one.
    with st.container(key=f"caption_{picture.digest[:12]}"):
        st.markdown(f"### {logic.escape_markdown(result.caption)}" if result.tokens else "### (an empty caption)")
        check = {"in_domain": result.in_domain, "domain_score": result.domain_score, "flags": result.flags}
        notice = logic.domain_notice({**check, "labels": result.labels}, trained_on(captioner))
        if notice:
            with st.container(key="caption_notice"):
                st.warning(logic.escape_markdown(notice), icon=":material/warning:")
    if result.attention is None or not result.tokens:
        st.caption("This captioner has no attention (the CNN+RNN baseline) or said nothing: no maps to show.")
        return result
    h, w = result.grid
    words = [logic.escape_markdown(token) for token in result.tokens]
    chips = logic.distinct_labels(words)  # pills tell options apart by label: "a" twice would be one
    chips_key = f"word_{picture.digest[:12]}_{beam}"
    chosen = st.pills(
        "Click a word to see where the model looked",
        list(range(len(words))),
        default=0,
        required=True,
        format_func=chips.__getitem__,  # a list's method: the widget keeps the words, nothing else
        key=chips_key,
    )
    left, right = st.columns(2)
    with left.container(key="word_overlay"):
        grid = result.attention[chosen]
        st.image(
            logic.word_overlay(picture.image, grid, LARGE),  # at the picture's own aspect ratio
            output_format="JPEG",
            width=LARGE,
            caption=f'"{words[chosen]}" (word {chosen + 1}): attention over the {h}x{w} grid',
        )
        if logic.is_uniform(grid):
            st.caption("This word's attention is spread evenly: it looked at nothing in particular.")
        st.image(legend(), caption=logic.LEGEND)
    with right:
        st.image(
            result.image.resize((LARGE, LARGE), Image.Resampling.BICUBIC),
            output_format="JPEG",
            width=LARGE,
            caption=f"The image as the model saw it ({result.image.width}x{result.image.height}, "
            "whole image, not cropped)",
        )
    st.subheader("Every word")
    st.caption("Press a word under its picture to show it large above.")
    tiles = logic.attention_overlays(picture.image, result.attention, TILE)
    with st.container(key="word_grid"):
        for start in range(0, len(tiles), PER_ROW):
            columns = st.columns(PER_ROW)
            for column, i in zip(columns, range(start, min(start + PER_ROW, len(tiles)))):
                column.image(tiles[i], output_format="JPEG")
                column.button(
                    f"{i + 1}. {words[i]}",
                    key=f"tile_{i}",
                    type="tertiary",
                    width="stretch",
                    on_click=logic.pick_option,  # selects the word's chip, so the large map shows it
                    args=(st.session_state, chips_key, i),
                )
    return result


# ---------------------------------------------------------------- what the encoder recognises


def show_labels(picture: logic.Picture, result) -> None:
    """The encoder's own ImageNet top 5 for the picture, each with its class activation map:
    true of a photograph, where the scenes models' caption and answers are not."""
    if not result.labels:
        st.caption("No labels for this image.")
        return
    st.caption(
        "The top 5 of the ImageNet classifier the pretrained encoder (EfficientNet-Lite0) was trained with, "
        "at 224 px, with the class activation map of each label (Zhou et al. 2016): where the evidence for "
        "it lies. These are ImageNet's 1,000 classes, whatever the captioner was trained on."
    )
    names = [f"{logic.escape_markdown(name)} {p:.0%}" for name, p in result.labels]
    chosen = st.pills(
        "Label",
        list(range(len(names))),
        default=0,
        required=True,
        format_func=names.__getitem__,
        key=f"label_{picture.digest[:12]}",
    )
    with st.container(key="label_map"):
        st.image(
            logic.word_overlay(picture.image, result.cams[chosen], LARGE),
            output_format="JPEG",
            width=LARGE,
            caption=f"Class activation map of {names[chosen]} (7x7 grid; its peak scaled to the top of the legend)",
        )


# ---------------------------------------------------------------- ask


def show_answer(picture: logic.Picture, answerer, answerer_key: tuple, answerer_error: str | None) -> None:
    st.header("Ask")
    if answerer is None:
        st.caption(f"No VQA model is loaded. {answerer_error}")
        return
    examples = logic.example_questions(picture.questions, trained_on(answerer))
    if examples:
        st.pills(
            "Example questions (the forms this model knows)" if not picture.questions else "Example questions",
            examples,
            key="example_question",
            format_func=logic.escape_markdown,
            on_change=logic.take_example,
            args=(st.session_state,),
        )
    with st.form("ask_form", border=False):
        question = st.text_input("Question", key="question", placeholder="what colour is the circle?")
        choices = st.text_area(
            "Choices (optional): one candidate answer per line, ranked by the model",
            key="choices",
            placeholder="red\nblue\ngreen",
            height=100,
        )
        allow_unknown = st.toggle(
            "Answer even with unknown words",
            key="allow_unknown",
            help="By default a question with a word the model never saw gets no answer: the model would "
            "drop the word and answer another question.",
        )
        st.form_submit_button("Ask", key="ask")
    if not question.strip():
        st.caption("Type a question about the image and press Enter.")
        return
    candidates = tuple(logic.parse_choices(choices))
    answered = answer_question(
        answerer_key, picture.digest, question.strip(), candidates, allow_unknown, answerer, picture.image
    )
    if "error" in answered:
        st.warning(f"Cannot answer that: {logic.escape_markdown(answered['error'])}")
        return
    notice = logic.domain_notice(answered, trained_on(answerer))
    if answered.get("withheld"):
        with st.container(key="answer_withheld"):
            st.warning(
                f"No answer: {logic.escape_markdown(answered['withheld'])}. Turn on *Answer even with "
                "unknown words* to see what it says anyway.",
                icon=":material/block:",
            )
            if notice:
                st.warning(logic.escape_markdown(notice), icon=":material/warning:")
        return
    if notice:
        with st.container(key="answer_notice"):
            st.warning(logic.escape_markdown(notice), icon=":material/warning:")
    note = logic.unknown_note(answered["unknown_words"])
    if note:
        st.warning(logic.escape_markdown(note))
    bars, maps = st.columns([2, 3])
    with bars.container(key="answer"):
        if "multiple_choice" in answered:
            show_choices(answered["multiple_choice"])
            st.caption(f"Open-ended answer: {logic.escape_markdown(answered['answer'])}")
        else:
            st.markdown(f"### {logic.escape_markdown(answered['answer'])}")
        for _, probability, label in logic.top_k_rows(answered["top_k"]):
            st.progress(probability, text=logic.escape_markdown(label))
    with maps:
        glimpses = logic.attention_overlays(picture.image, answered["attention"], GLIMPSE)
        h, w = answered["grid"]
        st.caption(f"Where each attention glimpse looked ({h}x{w} grid, stretched over the whole image):")
        columns = st.columns(max(len(glimpses), 2))
        for i, (column, tile) in enumerate(zip(columns, glimpses)):
            column.image(tile, caption=f"glimpse {i + 1}", output_format="JPEG")
            if logic.is_uniform(answered["attention"][i]):
                column.caption("spread evenly")
        st.image(legend(), caption=logic.LEGEND)


def show_choices(multiple_choice: dict) -> None:
    """The chosen candidate, the candidates ranked with their probabilities, the unscorable ones."""
    with st.container(key="choices_ranked"):
        if multiple_choice["choice"] is None:
            st.warning(logic.escape_markdown(multiple_choice["note"]))
        else:
            st.markdown(f"### {logic.escape_markdown(multiple_choice['choice'])}")
        for _, probability, label in logic.choice_rows(multiple_choice):
            st.progress(probability, text=logic.escape_markdown(label))
        note = logic.unscorable_note(multiple_choice)
        if note:
            st.caption(logic.escape_markdown(note))


# ---------------------------------------------------------------- the page


def main() -> None:
    page = st.sidebar.radio("Page", ["images", "charlm"], key="page", format_func=PAGES.get)
    if page == "charlm":
        charlm_page.main()
        return
    st.title("attend")
    st.markdown(
        "Show, Attend and Tell captions and a CNN+LSTM question answerer, with the attention behind every word."
    )
    st.info(logic.TRAINED_ON + " " + logic.COCO_HOWTO, icon=":material/info:")
    problems: list[str] = []
    (captioner, captioner_key, captioner_error), (answerer, answerer_key, answerer_error) = sidebar(problems)
    for problem in problems:
        st.error(problem)
    picture = choose_picture()
    if picture is None:
        return
    logic.forget_answer_on_new_picture(st.session_state, picture.digest)  # no old answer under a new image
    if picture.original_size and max(picture.original_size) > max(picture.image.size):
        (width, height), (kept_width, kept_height) = picture.original_size, picture.image.size
        st.caption(f"The image is {width}x{height} pixels; the app keeps it at {kept_width}x{kept_height}.")
    # Tabs: Caption and Ask are one click from the image, on a desktop and at phone width.
    caption_tab, ask_tab, labels_tab = st.tabs(["Caption", "Ask", "What the encoder recognises"])
    with caption_tab, st.container(key="section_caption"):
        result = show_caption(picture, captioner, captioner_key, captioner_error)
    with ask_tab, st.container(key="section_ask"):
        show_answer(picture, answerer, answerer_key, answerer_error)
    with labels_tab, st.container(key="section_labels"):
        if result is None:
            st.caption("The labels come with the caption: load a captioner.")
        else:
            show_labels(picture, result)


main()
