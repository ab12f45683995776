"""qru dashboard (streamlit run app.py): the frame — sidebar with the run store and run picker, and the pages in
pages/ (ui.frame). Pages only read from the store, launch CLI jobs and draw; all computation lives in qru/."""
import streamlit as st

import ui

st.set_page_config(page_title="qru: does quantization undo unlearning?", layout="wide")
ui.frame()
