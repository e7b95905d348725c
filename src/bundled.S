/* The bundled default model (models/stories260K.gguf), linked into the
 * binary so that heed runs with no model file. See model.c. */
    .section .rodata
    .balign 64
    .globl heed_bundled_model
heed_bundled_model:
    .incbin "models/stories260K.gguf"
heed_bundled_model_end:
    .balign 8
    .globl heed_bundled_model_size
heed_bundled_model_size:
    .quad heed_bundled_model_end - heed_bundled_model
    .section .note.GNU-stack,"",@progbits
