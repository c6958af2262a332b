"""attend in the browser: caption an image, see where each word looked, ask a question.

Started by ``attend app`` (or ``streamlit run apps/streamlit_app.py``). UI only: the models
come from ``captioner.inference`` / ``vqa.inference`` and the plain helpers from
``apps.app_logic``. User and model text is escaped Markdown, never raw HTML.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image

from apps import app_logic as logic
from core.errors import AttendError

TILE = 150  # px of a word's tile in the grid of every word
LARGE = 384  # px of the selected word's overlay (drawn at this size: a smooth map)
GLIMPSE = 256  # px of each VQA glimpse
PER_ROW = 6  # word tiles per row

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
def answer_question(model: tuple, digest: str, question: str, _answerer, _image):
    """The answer dict, or {"error": message} for a question or image the model cannot use."""
    try:
        return _answerer.ask_one(_image, question, top_k=5)
    except AttendError as e:
        return {"error": str(e)}


@st.cache_data(show_spinner=False)
def samples():
    return logic.gallery()


@st.cache_data(show_spinner=False)
def legend():
    return logic.colour_bar()


def load_model(kind: str, loader, choice: str, path_text: str, env_name: str):
    """(model, cache key, None) or (None, None, message saying why); load errors go to ``problems``."""
    try:
        source = logic.model_source(choice, path_text, env_name)
    except ValueError as e:
        st.sidebar.info(str(e).capitalize())
        return None, None, f"{kind}: {e}."
    stamp = logic.model_stamp(source)
    try:
        model = loader(source, stamp)
    except AttendError as e:
        message = f"{kind} not loaded. {logic.escape_markdown(str(e).rstrip('.'))}."
        if choice != "path":
            message += " Choose *Checkpoint file* in the sidebar to load your own."
        st.sidebar.error(message)
        problems.append(message)
        return None, None, message
    where = getattr(model, "path", None) or source or "shipped default"
    st.sidebar.caption(f"{kind}: {logic.escape_markdown(str(where))}")
    return model, stamp, None


# ---------------------------------------------------------------- sidebar: models (the page's head first)

st.title("attend")
st.markdown("Show, Attend and Tell captions and a CNN+LSTM question answerer, with the attention behind every word.")
st.info(logic.TRAINED_ON + " " + logic.COCO_HOWTO, icon=":material/info:")

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
problems: list[str] = []
captioner, captioner_key, captioner_error = load_model(
    "Captioner", get_captioner, caption_choice, caption_path, logic.ENV_CAPTIONER
)
answerer, answerer_key, answerer_error = load_model("VQA model", get_answerer, vqa_choice, vqa_path, logic.ENV_VQA)
if "path" in (caption_choice, vqa_choice):
    st.sidebar.caption(logic.COCO_HOWTO)

# ---------------------------------------------------------------- the page

for problem in problems:
    st.error(problem)

source = st.segmented_control(
    "Image", ["Upload", "Camera", "Samples"], default="Upload", required=True, key="image_source"
)
picture = None
try:
    if source == "Upload":
        upload = st.file_uploader(
            f"Upload an image (JPEG, PNG or WebP, up to {logic.MAX_UPLOAD_MB} MB)",
            type=logic.UPLOAD_TYPES,
            max_upload_size=logic.MAX_UPLOAD_MB,
            key="upload",
        )
        if upload is not None:
            picture = logic.read_picture(upload.getvalue(), upload.name)
    elif source == "Camera":
        photo = st.camera_input("Take a photo", key="camera")
        if photo is not None:
            picture = logic.read_picture(photo.getvalue(), "camera photo")
    else:
        gallery = samples()
        st.caption(
            "Generated scenes (what the default captioner and VQA model know) and easy-VQA test "
            "images (for the easy-VQA model)."
        )
        for start in range(0, len(gallery), PER_ROW):
            columns = st.columns(PER_ROW)
            for i, column in zip(range(start, min(start + PER_ROW, len(gallery))), columns):
                column.image(gallery[i].data, caption=gallery[i].label, width="stretch")
                if column.button("Use", key=f"sample_{i}", width="stretch"):
                    st.session_state.sample = i
        if "sample" in st.session_state:
            sample = gallery[st.session_state.sample]
            picture = logic.read_picture(sample.data, sample.label, questions=sample.questions)
        else:
            st.caption("Press *Use* under an image.")
except AttendError as e:  # ImageError: not an image, truncated, too large
    st.error(f"That file cannot be used: {logic.escape_markdown(str(e))}")
    picture = None

if picture is None:
    st.stop()

# ---------------------------------------------------------------- caption


def show_caption(picture: logic.Picture) -> None:
    st.header("Caption")
    if captioner is None:
        st.caption(f"No captioner is loaded. {captioner_error}")
        return
    beam = st.columns([1, 2])[0].slider(
        "Beam size", 1, 5, 3, key="beam", help="How many partial captions the search keeps; 1 is greedy decoding."
    )
    result = caption_image(captioner_key, picture.digest, beam, captioner, picture.image)
    # The key names the image: the browser test waits for this caption, not the last one.
    with st.container(key=f"caption_{picture.digest[:12]}"):
        st.markdown(f"### {logic.escape_markdown(result.caption)}" if result.tokens else "### (an empty caption)")
    if result.attention is None or not result.tokens:
        st.caption("This captioner has no attention (the CNN+RNN baseline) or said nothing: no maps to show.")
        return
    h, w = result.grid
    chosen = st.pills(
        "Click a word to see where the model looked",
        list(range(len(result.tokens))),
        default=0,
        required=True,
        format_func=lambda i: result.tokens[i],
        key=f"word_{picture.digest[:12]}_{beam}",
    )
    left, right = st.columns(2)
    with left.container(key="word_overlay"):
        grid = result.attention[chosen]
        st.image(
            logic.word_overlay(result.image, grid, LARGE),
            output_format="JPEG",
            width=LARGE,
            caption=f'"{result.tokens[chosen]}": attention over the {h}x{w} grid',
        )
        if logic.is_uniform(grid):
            st.caption("This word's attention is spread evenly: it looked at nothing in particular.")
        st.image(legend(), caption="low attention -> high attention")
    with right:
        st.image(
            result.image.resize((LARGE, LARGE), Image.Resampling.BICUBIC),
            output_format="JPEG",
            width=LARGE,
            caption=f"The image as the model saw it ({result.image.width}x{result.image.height}, "
            "whole image, not cropped)",
        )
    st.subheader("Every word")
    tiles = logic.attention_overlays(result.image, result.attention, TILE)
    with st.container(key="word_grid"):
        for start in range(0, len(tiles), PER_ROW):
            columns = st.columns(PER_ROW)
            for column, i in zip(columns, range(start, min(start + PER_ROW, len(tiles)))):
                column.image(tiles[i], caption=f"{i + 1}. {result.tokens[i]}", output_format="JPEG")


# ---------------------------------------------------------------- ask


def _use_example() -> None:
    picked = st.session_state.get("example_question")
    if picked:
        st.session_state.question = picked


def show_answer(picture: logic.Picture) -> None:
    st.header("Ask")
    if answerer is None:
        st.caption(f"No VQA model is loaded. {answerer_error}")
        return
    if picture.questions:
        st.pills("Example questions", picture.questions, key="example_question", on_change=_use_example)
    with st.form("ask_form", border=False):
        question = st.text_input("Question", key="question", placeholder="what colour is the circle?")
        st.form_submit_button("Ask", key="ask")
    if not question.strip():
        st.caption("Type a question about the image and press Enter.")
        return
    answered = answer_question(answerer_key, picture.digest, question.strip(), answerer, picture.image)
    if "error" in answered:
        st.warning(f"Cannot answer that: {logic.escape_markdown(answered['error'])}")
        return
    note = logic.unknown_note(answered["unknown_words"])
    if note:
        st.warning(logic.escape_markdown(note))
    bars, maps = st.columns([2, 3])
    with bars.container(key="answer"):
        st.markdown(f"### {logic.escape_markdown(answered['answer'])}")
        for _, probability, label in logic.top_k_rows(answered["top_k"]):
            st.progress(probability, text=logic.escape_markdown(label))
    with maps:
        seen = logic.model_view(picture.image, answerer.encoder.config.image_size)
        glimpses = logic.attention_overlays(seen, answered["attention"], GLIMPSE)
        h, w = answered["grid"]
        st.caption(f"Where each attention glimpse looked ({h}x{w} grid, over the image as this model saw it):")
        columns = st.columns(max(len(glimpses), 2))
        for i, (column, tile) in enumerate(zip(columns, glimpses)):
            column.image(tile, caption=f"glimpse {i + 1}", output_format="JPEG")
            if logic.is_uniform(answered["attention"][i]):
                column.caption("spread evenly")
        st.image(legend(), caption="low attention -> high attention")


with st.container(key="section_caption"):
    show_caption(picture)
with st.container(key="section_ask"):
    show_answer(picture)
