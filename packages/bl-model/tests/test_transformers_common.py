"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) at the locked version,
run against BehaviorLlavaForCausalLM with text-only, image and video inputs, wired as transformers wires
`tests/models/llava_next_video`. The upstream files come from the transformers sdist (`transformers_suite`).

Every upstream test skipped here says why in its `unittest.skip` reason.
"""

import unittest

import torch
from transformers import InstructBlipQFormerConfig, LlamaConfig

from bl_model import BehaviorLlavaConfig, BehaviorLlavaForCausalLM, EvaVisionConfig

from .transformers_suite import import_common_tests

modeling_common, configuration_common = import_common_tests()
ModelTesterMixin, ConfigTester = modeling_common.ModelTesterMixin, configuration_common.ConfigTester
ids_tensor, floats_tensor = modeling_common.ids_tensor, modeling_common.floats_tensor
TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION = (
    modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION
)

# Below every random text id (6..98), so tests that clamp ids to a smaller vocabulary keep it, and above the ids
# 0..4 that tests extending a batch with random rows draw (those rows have no media).
MEDIA_ID = 5


class BehaviorLlavaModelTester:
    """Tiny configs and a batch of `batch_size` rows, each with one image, one 2-frame video or no media."""

    def __init__(self, parent, media: str):
        self.parent, self.media = parent, media
        self.batch_size, self.seq_length, self.query_length = 3, 12, 5
        self.vocab_size, self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 99, 32, 2, 4
        self.is_training = True
        self.frames = {"text": 0, "image": 1, "video": 2}[media]

    def get_config(self) -> BehaviorLlavaConfig:
        vision = EvaVisionConfig(
            image_size=28,
            patch_size=14,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2.0,
        )
        qformer = InstructBlipQFormerConfig(
            vocab_size=self.vocab_size,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            encoder_hidden_size=16,
        )
        text = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        return BehaviorLlavaConfig(
            vision_config=vision,
            qformer_config=qformer,
            text_config=text,
            num_query=2,
            image_compress="grid:2",
            media_token_id=MEDIA_ID,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[BehaviorLlavaConfig, dict]:
        config = self.get_config()
        B = self.batch_size
        input_ids = ids_tensor([B, self.seq_length], self.vocab_size - 6) + 6  # (B, L) text ids 6..98
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.frames:
            slots = config.media_tokens(self.frames, is_video=self.media == "video")
            input_ids[:, 1 : 1 + slots] = MEDIA_ID  # one media item per row, after the first token
            inputs |= {
                "pixel_values": floats_tensor([B * self.frames, 3, 28, 28]),  # (S, 3, H, W)
                "media_frame_counts": torch.full((B,), self.frames),
                "media_is_video": torch.full((B,), self.media == "video"),
                "query_input_ids": ids_tensor([B, self.query_length], self.vocab_size),  # (Q, Lq)
                "query_attention_mask": torch.ones(B, self.query_length, dtype=torch.long),
                "query_media_index": torch.arange(B),
            }
        inputs["labels"] = input_ids.masked_fill(input_ids == MEDIA_ID, -100)  # (B, L)
        return config, inputs


class _CommonTests(ModelTesterMixin):
    all_model_classes = (BehaviorLlavaForCausalLM,)
    media = "text"
    _is_composite = True

    def setUp(self):
        self.model_tester = BehaviorLlavaModelTester(self, self.media)
        self.config_tester = ConfigTester(self, config_class=BehaviorLlavaConfig, has_text_modality=False)

    @unittest.skip(
        "the sdist does not ship tests/generation/test_utils.py (GenerationTesterMixin) for the tester to inherit; "
        "bl-model's generation tests (GenerationMixin with text, image and video) are test_generation.py"
    )
    def test_generation_tester_mixin_inheritance(self):
        pass

    @unittest.skip(
        "by design: base_model (the LLM) saves a LlamaConfig, and BehaviorLlavaConfig.from_pretrained refuses "
        "another model type's config.json rather than build the default 7B sub-models; loading an LLM checkpoint "
        "with config= is test_hf_conventions.py::test_base_model_is_the_llm_and_an_llm_checkpoint_loads_into_it"
    )
    def test_correct_missing_keys(self):
        pass


class TextOnlyTest(_CommonTests, unittest.TestCase):
    """The whole mixin (and the config tests) with text-only inputs."""

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(
        "the test watches the first GradientCheckpointingLayer in module order, the Q-Former's, which text-only "
        "inputs never run; ImageTest and VideoTest run it with media"
    )
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip("as test_training_gradient_checkpointing")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip("as test_training_gradient_checkpointing")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


# The mixin's tests that feed the tester's inputs through the model: the media classes run these (the others,
# about loading, dtypes and attention setters, do not depend on the inputs and run once, in TextOnlyTest).
MEDIA_TESTS = {
    "test_all_tensors_are_parameter_or_buffer",
    "test_attention_outputs",
    "test_batching_equivalence",
    "test_can_capture_specific_layers_hidden_states",
    "test_capture_outputs_decorator",
    "test_causal_lm_loss_honors_shift_labels",
    "test_determinism",
    "test_enable_input_require_grads_with_gradient_checkpointing",
    "test_hidden_states_output",
    "test_inputs_embeds",
    "test_inputs_embeds_matches_input_ids",
    "test_load_with_mismatched_shapes",
    "test_model_forward_default_config_values",
    "test_model_outputs_equivalence",
    "test_problem_types",
    "test_resize_embeddings_untied",
    "test_resize_tokens_embeddings",
    "test_retain_grad_hidden_states_attentions",
    "test_save_load",
    "test_training",
    "test_training_gradient_checkpointing",
    "test_training_gradient_checkpointing_use_reentrant_false",
    "test_training_gradient_checkpointing_use_reentrant_true",
}


class _MediaTests(_CommonTests):
    def test_inputs_embeds(self):
        """As llava_next_video's: inputs_embeds run without the media (with them, forward refuses by design:
        nothing says where they go; test_hf_conventions checks the refusal and `embed_inputs`)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = BehaviorLlavaForCausalLM(config).eval()
        input_ids = inputs.pop("input_ids").masked_fill(inputs["labels"] == -100, 0)  # placeholders -> pad
        text = {k: v for k, v in inputs.items() if k in ("attention_mask", "labels")}
        with torch.no_grad():
            from_embeds = model(inputs_embeds=model.get_input_embeddings()(input_ids), **text)
            torch.testing.assert_close(from_embeds.logits, model(input_ids=input_ids, **text).logits)


class ImageTest(_MediaTests, unittest.TestCase):
    media = "image"


class VideoTest(_MediaTests, unittest.TestCase):
    media = "video"


for _class in (ImageTest, VideoTest):
    for _name in dir(_class):
        if _name.startswith("test_") and callable(getattr(_class, _name)) and _name not in MEDIA_TESTS:
            setattr(_class, _name, None)  # not collected: unittest collects callables only
del _class, _name  # a TestCase bound to a module name would be collected a second time
