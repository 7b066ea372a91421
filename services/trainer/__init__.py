"""trainer: builds training sets from clean events, trains torch models (one process or several with
torch.distributed), and publishes signed, encrypted artifacts."""
