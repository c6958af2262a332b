"""CNN+LSTM visual question answering with question-guided attention (Kazemi & Elqursh 2017)."""
