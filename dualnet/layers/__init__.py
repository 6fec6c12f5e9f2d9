"""Every layer under its CS231n name: `*_forward(...) -> (out, cache)`, `*_backward(dout, cache)`.

Layers ask their inputs for the backend, so the same call runs on numpy, cupy or cuda-emu
arrays. The modules group them by family; this package re-exports the flat course names.
"""

from .activations import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from .conv import conv_backward_fast, conv_backward_naive, conv_forward_fast, conv_forward_naive
from .dense import affine_backward, affine_forward
from .dropout import dropout_backward, dropout_forward
from .losses import softmax_loss, svm_loss
from .norm import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from .pool import (
    avg_pool_backward_fast,
    avg_pool_backward_naive,
    avg_pool_forward_fast,
    avg_pool_forward_naive,
    global_avg_pool_backward,
    global_avg_pool_forward,
    max_pool_backward_fast,
    max_pool_backward_naive,
    max_pool_forward_fast,
    max_pool_forward_naive,
)
from .sandwich import (
    affine_norm_relu_backward,
    affine_norm_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    conv_bn_relu_backward,
    conv_bn_relu_forward,
    conv_bn_relu_pool_backward,
    conv_bn_relu_pool_forward,
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)

