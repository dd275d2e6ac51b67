"""Data: Fashion-MNIST and COCO acquisition, captions, caption embeddings, batches."""
