"""A student's forward for `mechscope lab compare --student docs/examples/student.py:forward`.

forward(input_ids, record, model) returns logits (1, T, vocab) and calls record(site_name, tensor) at the sites
it computes. This one hands the work to mechscope's own from-scratch forward (so every site matches); replace its
body with your own implementation, reading the weights from model.hf.state_dict().
"""
from mechscope.lab import from_scratch


def forward(input_ids, record, model):
    return from_scratch(model)(input_ids, record)
