import pytest


@pytest.fixture(autouse=True)
def torch_one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def classifier_embedding(tmp_path_factory):
    """An embedding model file for pipeline tests: the body of the shipped classifier and a seeded,
    untrained head (a random projection of the classifier's pooled features), with its card."""
    import torch

    from tomolens.embed.network import EmbedNet3D
    from tomolens.embed.train import ARCHITECTURE, init_body
    from tomolens.models.card import ModelCard, save_model

    torch.manual_seed(0)
    net = EmbedNet3D(48, 32, 16)
    init_body(net, "classify_phantoms_resnet")
    card = ModelCard(
        name="test_embedding",
        task="embed",
        architecture=ARCHITECTURE,
        arch_kwargs={"dim": 48, "box": 32, "width": 16},
        voxel_size_A=10.0,
        patch_size=[32] * 3,
        normalisation="zscore per subtomogram",
        polarity="bright",
    )
    weights, _ = save_model(net.eval(), card, tmp_path_factory.mktemp("embed") / "test_embedding.pt")
    return str(weights)
