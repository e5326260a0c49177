"""The governance dashboard (Streamlit): ``mape dashboard`` or ``streamlit run dashboard/app.py``."""
