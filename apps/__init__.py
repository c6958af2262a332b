"""The thin front ends: the `attend` command line and the Streamlit app."""
