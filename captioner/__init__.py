"""Show, Attend and Tell image captioning: image pipeline, encoder, vocabulary, decoder."""
