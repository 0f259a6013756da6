"""Stand-in for the modeling file a Step-3.5-Flash release ships (config.json auto_map): a causal LM over
transformers' own Step-3.5 decoder stack (`Step3p7TextModel`, config `step3p5`) with an LM head. Copied into the
tiny test checkpoints so the --trust_remote_code path is exercised as with a real release."""

from __future__ import annotations

from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.step3p7.configuration_step3p7 import Step3p7TextConfig
from transformers.models.step3p7.modeling_step3p7 import Step3p7PreTrainedModel, Step3p7TextModel


class Step3p5ForCausalLM(Step3p7PreTrainedModel, GenerationMixin):
    config_class = Step3p7TextConfig
    config: Step3p7TextConfig

    def __init__(self, config: Step3p7TextConfig):
        super().__init__(config)
        self.model = Step3p7TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        return CausalLMOutputWithPast(logits=self.lm_head(outputs.last_hidden_state),
                                      past_key_values=outputs.past_key_values)
