"""Write notebooks/course_lviv_c.ipynb: the Deep Learning in Neuroscience course notebook (Lviv
Data Science Summer School 2021, E. Y. Walker) ported to lviv_c.

The course's cells are kept; the imports are lviv_c's; shell cells (`!pip`, `!git clone`, `ls`)
are Python (or a note); the data path is $LVIV_DATA or a synthetic scan; and the parts the
notebook asks collaborators for are filled in (test-set evaluation, a simpler CNN, gradient RFs
and MEIs of the Lurz 2020 model and its linear variant).

Environment variables read by the notebook: LVIV_DATA (a scan folder), LVIV_QUICK=1 (small
synthetic scan), LVIV_MAX_ITER (epochs per model, default 200 = the course's), LVIV_MEI_ITER
(MEI steps, default 500), LVIV_CACHE (where synthetic scans go).

    python notebooks/make_notebook.py            # rewrites the .ipynb next to this script
"""
import json
import os
import sys

CELLS = []


def course_class(name):
    """The source of the notebook's model class `name` as lviv_c/course.py defines it: the one
    copy of the course's Linear and CNN (the tests and lviv_c.course use the same code)."""
    import ast
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lviv_c", "course.py")
    with open(path) as f:
        src = f.read()
    for node in ast.parse(src).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return ast.get_source_segment(src, node)
    raise KeyError(f"{name} is not a class of lviv_c/course.py")


def md(text):
    CELLS.append(("markdown", text.strip("\n")))


def code(text):
    CELLS.append(("code", text.strip("\n")))


# ------------------------------------------------------------------------------------ intro
md(r"""
# Welcome to Deep Learning in Neuroscience by Edgar Y. Walker — on `lviv_c`

This is the Jupyter notebook that accompanies the course on "Deep Learning in Neuroscience" taught as part of the Lviv Data Science Summer School 2021 ([GitHub repository](https://github.com/eywalker/lviv-2021)), ported to **`lviv_c`**: the same code, with `lviv_c` in place of PyTorch and the course package `lviv`. Only the imports differ (`import lviv_c as torch`, `from lviv_c import nn`, `from lviv_c.dataset import load_dataset`, ...). Tensors, autograd, the training loop and the dataset reader run in C (CUDA on a GPU), so the notebook runs on a laptop CPU too.

In this course, we will learn how deep learning is getting utilized in studying neuroscience, specifically in building models of neurons to complex sensory inputs such as natural images. We will start by going through some neuroscience primer. We will then get our hands dirty by taking real neuronal responses recorded from mouse primary visual cortex (V1) as the mouse observes a bunch of natural images and developing a model to predict these responses. By the end of this course, you will gain some basic familiarity in utilizing deep learning models to predict responses of 1000s of neurons to natural images!

Where the original notebook asks collaborators for help (evaluation on the test set, a simpler CNN, receptive fields and most exciting inputs of the state-of-the-art model), this version fills it in.
""")

md(r"""
## Preparing the environment

### Getting the code

The original notebook installs PyTorch and the course package here:

```
!pip3 install torch==1.9.0+cu102 torchvision==0.10.0+cu102 -f https://download.pytorch.org/whl/torch_stable.html
!pip3 install git+https://github.com/eywalker/lviv-2021.git
```

With `lviv_c` there is nothing else to install: `lviv_c` (with NumPy and OpenBLAS) replaces both, and `matplotlib` draws the figures. In the repository, `make build` installs and builds it into `.venv`. Let's check that it imports:
""")

code(r"""
import lviv_c
print("lviv_c", lviv_c.__version__, "| GPU:", lviv_c.cuda.is_available())
""")

md(r"""
### Getting the dataset

The course uses the dataset released with [Lurz et al. ICLR 2021](https://github.com/sinzlab/Lurz_2020_code), which the original notebook downloads with

```
!git clone https://gin.g-node.org/cajal/Lurz2020.git /content/data
```

(5-10 minutes). If you have it, point the environment variable `LVIV_DATA` at the scan folder `.../static20457-5-9-preproc0` before starting Jupyter. Otherwise this notebook uses a **synthetic scan** in exactly the same layout (5993 trials, 5335 neurons, 36x64 images; simulated simple and complex cells with known receptive fields, so we can check what the models learn), generated once into a cache folder (`$LVIV_CACHE`, else `.cache/`). With `LVIV_QUICK=1` the synthetic scan is small and every model trains for only a few epochs (`LVIV_MAX_ITER`): that is how the test suite runs this notebook.
""")

code(r"""
import os

QUICK = os.environ.get("LVIV_QUICK") == "1"
MAX_ITER = int(os.environ.get("LVIV_MAX_ITER", 2 if QUICK else 200))   # the course: 200
MEI_ITER = int(os.environ.get("LVIV_MEI_ITER", 30 if QUICK else 500))

if os.environ.get("LVIV_DATA"):
    data_path = os.environ["LVIV_DATA"]
else:
    from lviv_c.demo import synthetic_scan
    data_path = synthetic_scan(quick=QUICK)   # generated on the first run only
print(data_path)
""")

# ------------------------------------------------------------------------------------ data
md(r"""
# Developing models of neural population responses to natural images

Now that you have been primed with just enough background neuroscience, let's get our hand dirty and try to build our first neural predictive models.

As part of the setup, we have a 2-photon imaging dataset from mouse primary visual cortex as we present 1000s of natural images.
""")

code(r"""
import numpy as np
import lviv_c as torch
from lviv_c import nn
from lviv_c.nn import functional as F
import matplotlib.pyplot as plt
%matplotlib inline
""")

md(r"""
## Navigating the neuroscience data

As with any data science project, you must start by understanding your data! Let's take some time to navigate the data you downloaded. (The original notebook uses the shell's `ls` here; we list the folders from Python.)
""")

code(r"""
sorted(os.listdir(data_path))
""")

code(r"""
sorted(os.listdir(os.path.join(data_path, "data")))
""")

code(r"""
def by_number(names):
    return sorted(names, key=lambda n: int(n.split(".")[0]))

by_number(os.listdir(os.path.join(data_path, "data", "responses")))[:30]
""")

code(r"""
by_number(os.listdir(os.path.join(data_path, "data", "images")))[:30]
""")

md(r"""
You can see that both responses and contained in collections of `numpy` files named like `1.npy` or `31.npy`. The number here corresponds to a specific **trial** or simply different image presentation during an experiment.

Let's take a look at some of these files.

### Loading data files one at a time

Let's pick some trial and load the image as well as the response (trial 1100 as in the course; a smaller index if the scan is small).
""")

code(r"""
n_files = len(os.listdir(os.path.join(data_path, "data", "images")))
trial_idx = 1100 if n_files > 1100 else n_files // 2
trial_image = np.load(f'{data_path}/data/images/{trial_idx}.npy')
trial_responses = np.load(f'{data_path}/data/responses/{trial_idx}.npy')
""")

md(r"""The image is shaped as $\text{channel} \times \text{height} \times \text{width}$""")

code(r"""
trial_image.shape
""")

code(r"""
plt.imshow(trial_image.squeeze(), cmap='gray', vmin=0, vmax=255)
plt.axis('off')
""")

md(r"""In contrast, the shape of `trial_response` is simply the number of neurons""")

code(r"""
trial_responses.shape
""")

code(r"""
trial_responses.min() # responses are practically always >= 0
""")

code(r"""
trial_responses.max()
""")

code(r"""
fig, ax = plt.subplots(1, 1, dpi=150)
ax.hist(trial_responses, 100);
""")

md(r"""
You can see most neuron's responses stay very close to 0 - signifying no activity.

### Loading the entire dataset

While we can inspect the image and the corresponding neural population responses one image at a time, this is quite cumbersome and also impractical for use in network training. Fortunately, `lviv_c` provides the course's convenience function that loads the entire dataset as dataloaders.
""")

code(r"""
from lviv_c.dataset import load_dataset
""")

md(r"""As we prepare the dataloaders, we get to specify the batch size.""")

code(r"""
dataloaders = load_dataset(path = data_path, batch_size=30)
""")

md(r"""The function returns a dictionary consisting of three dataloaders for training, validation, and test set.""")

code(r"""
dataloaders
""")

md(r"""Let's specifically look at the trainset dataloader""")

code(r"""
train_loader = dataloaders['train']
""")

md(r"""Total number of images can be checked as follows:""")

code(r"""
len(train_loader.sampler)
""")

md(r"""We can inspect what it returns per batch:""")

code(r"""
images, responses = next(iter(train_loader))
""")

code(r"""
images.shape
""")

code(r"""
responses.shape
""")

md(r"""
As expected, it returns a batch of 30 images and the responses of all neurons. We keep the number of neurons for the models below (5335 for the course scan).
""")

code(r"""
n_neurons = responses.shape[1]
n_neurons
""")

md(r"""Similar inspection can be done on the **validation** and **testing** dataloaders.""")

code(r"""
# number of images in validation set
len(dataloaders['validation'].sampler)
""")

code(r"""
# number of images in test set
len(dataloaders['test'].sampler)
""")

md(r"""
You might think that we have a lot of images in test set, but this is because test set consists of repeated images.

Some additional trial information can be observed by accessing the underlying dataset object and looking at the `trial_info`. Note that this is not part of the standard PyTorch dataset/dataloader interface, but rather a feature specifically provided by the library!
""")

code(r"""
# Access to the dataset object that underlies all dataloaders
testset = dataloaders['test'].dataset
""")

code(r"""
test_trials = np.where(testset.trial_info['tiers'] == 'test')[0]
""")

code(r"""
image_ids = testset.trial_info['frame_image_id']
""")

code(r"""
np.unique(image_ids[test_trials])
""")

code(r"""
len(np.unique(image_ids[test_trials]))
""")

md(r"""So you can see that the test set consists of a set of unique images (100 for the course scan), each repeated up to 10 times.""")

code(r"""
testset.trial_info.keys()
""")

code(r"""
testset.trial_info.frame_image_id  # gives information about presented image ID
""")

code(r"""
testset
""")

code(r"""
dataloaders
""")

code(r"""
len(dataloaders['validation'].dataset.trial_info.frame_image_id)  # gives information about presented image ID
""")

# ------------------------------------------------------------------------------------ LN
md(r"""
# Modeling the neuronal responses

Now that we have successfully loaded the dataset and inspected its contents, it's time for us to start **modeling** the responses.

We will start by building a very basic **Linear-Nonlinear model** - which is nothing more than a shallow neural network with single linear layer followed by an activation function.

## Linear-Nonlinear (LN) model

### Background

Arguably one of the simplest model of a neuron's response to a stimulus is the **linear-nonlinear (LN) model**.

Given an image $I \in \mathbb{R}^{h\,\times\,w}$ where $h$ and $w$ are the height and the width of the image, respectively, let us collapse the image into a vector $x \in \mathbb{R}^{hw}$.

A single neuron's response $r$ under linear-nonlinear model can then be expressed as:
$$
r = a(w^\top x + b),
$$
where $w \in \mathbb{R}^{hw}$ and $b \in \mathbb{R}$ are **weight** and **bias**, and $a:\mathbb{R}\mapsto\mathbb{R}$ is a scalar **activating function**.

We can in fact extend to capture the responses of all $N$ neurons simultaneously as:

$$
\mathbf{r} = a(\mathbf{W} x + \mathbf{b}),
$$
where $\mathbf{r} \in \mathbb{R}^{N}$, $\mathbf{W} \in \mathbb{R}^{N\,\times\,hw}$ and $\mathbf{b} \in \mathbb{R}^{N}$.

Hence, each neuron weights each pixel of the image according to the weight $w$ (a column of $\mathbf{W}$) and thus characterizes how much the each neuron "cares" about a specific pixel.

The nonlinear activation function $a(\cdot)$ ensures, among other things, that the output of the network stays above 0. In fitting neuronal responses, we tend to use $a(x) = ELU(x) + 1$ where ELU (Exponential Linear Unit) is defined as follows:

$$
    ELU(x) =
\begin{cases}
    e^x - 1, & x \lt 0 \\
    x,   & x \ge 0
\end{cases}
$$
""")

code(r"""
# Plotting ELU function
x = np.linspace(-2, 2)
plt.plot(x, F.elu(torch.Tensor(x)))
plt.axhline(0, c='r', ls='--')
""")

md(r"""We shift it by 1 to ensure it will always remain positive""")

code(r"""
# Plotting ELU+1 function
x = np.linspace(-2, 2)
plt.plot(x, F.elu(torch.Tensor(x))+1)
plt.axhline(0, c='r', ls='--')
""")

md(r"""
Overall, it can be seen that a linear-nonlinear is nothing more than a single linear layer on flattened image, followed by a nonlinear activation. Now let's go ahead and implement our LN model!

### Implementation

We therefore go ahead and implement a simple network consisting of a linear layer followed by ELU + 1 activation
""")

code(course_class("Linear"))


md(r"""
And that's it! We have now designed our first network model of the neuron's responses! (The same class is also available as `lviv_c.course.Linear`.)

**BONUS**: notice that we used batch normalization (BN) layer right before the linear layer? This empirically helps to stabilize the training, allowing us to be not too sensitive to the weight and bias initialization. You could totally implement and train a LN network without such BN layer and you are more than welcome to try! However if you do, be very aware of the network weight initializations and the chocie of learning rate during the training.

Finally, let's instantiate the model before we move onto the next step of training the model!
""")

code(r"""
ln_model = Linear(input_height=64, input_width=36, n_neurons=n_neurons, gamma=0.1)
""")

md(r"""
### Training the network

Now that we have a candidate model designed, it's time to train it. While we could use standard set of optimizers (`lviv_c.optim`) to implement our training routine, here we are provided with a convenience function `train_model` that would handle a lot of the training boiler plate.
""")

code(r"""
from lviv_c.trainers import train_model
""")

md(r"""
Critically, `train_model` sets up training based on **Poisson loss** and also perform early stopping based on **correlation** of the predicted neuronal responses with the actual neuronal responses on the **validation set**. Let's now talk briefly about our objective (loss) function of choice in training neuron response models - the Poisson loss.

### Mathematical aside: Poisson Loss

#### How we are **actually** modeling the noisy neuronal responses

The use of **Poisson loss** follows from the assumption that, *conditioned on the stimulus*, the neurons' responses follow an **independent Poisson** distribution. That is, given an input image $x$, the population response $\mathbf{r}$ is distributed as:

$$
p(\mathbf{r} | x) = \prod_i^N \text{Poiss}(r_i; \lambda_i(x))
$$

where $r_i$ is the $i^\text{th}$ neuron in the population $\mathbf{r}$. The $\lambda_i$ is the parameter for Poisson distribution that controls its **average value**. Here we express $\lambda_i(x)$ to indicate the fact that the average response for each neuron is expected to vary *as a function of the input image*. We can express this average matching as:

$$
\mathbb{E}[r_i|x] = \lambda_i(x)
$$

In fact, it is precise this function $\lambda_i(x)$ that we are modeling using LN models and, in the next step, more complex neural networks. In otherwords, we are learning $\lambda_i(x) = f_i(x, \theta)$, where $\theta$ is the trainable parameters of the model.

Putting all together, this means that, our model $f(x, \theta)$ is really modeling the average activity of the neurons,

$$
\mathbb{E}[\mathbf{r}|x] = \mathbf{f}(x, \theta)
$$

while we are assuming that the neurons are distribution according to **independent Poisson** distribution around the average responses by our model $\mathbf{f}(x, \theta)$.

#### Deriving the objective function

Poisson distribution is defined as follows:

$$
p(r) = \text{Poiss}(r; \lambda) = \frac{e^{-\lambda}\lambda^{r}}{r!}
$$

During the training, we would want to adjust the model parameter $\theta$ to maximize the chance of observing the response $\mathbf{r}$ to a known image $x$. This is achieved by **maximizing** the log-likelihood function $\log p(\mathbf{r}|x, \theta)$, or equivalently by **minimzing the negative log-likelihood function** as the objective function $L(x, \mathbf{r}, \theta)$:

$$
\begin{align}
L(x, \mathbf{r}, \theta) &= -\log p(\mathbf{r}|x, \theta) \\
&= -\log \prod_i \text{Poiss}(r_i; f_i(x, \theta)) \\
&= -\sum_i \log \frac{e^{-f_i(x, \theta)}f_i(x, \theta)^{r_i}}{r_i!} \\
&= \sum_i \left(f_i(x, \theta) - r_i \log f_i(x, \theta) + \log r_i! \right)
\end{align}
$$

During the optimization, we seek for $\theta$ that would minimize the loss $L$. Note that since the term $log r_i!$ does not depend on $\theta$, it can be safely dropped from Poisson loss. Hence you would commonly see the following expression as the definition of the **Poisson loss**

$$
L_\text{Poiss}(x, \mathbf{r}, \theta) = \sum_i \left(f_i(x, \theta) - r_i \log f_i(x, \theta)\right)
$$

### Performing the training

Now that we have the theoretical foundation for the training and the choice of the objective function under our belt, let's go ahead and train the network. Because the function `train_model` handles a lot underneath the hood, training a model is just as easy as invoking the function by passing it the model to be trained and the dataloaders! (`max_iter=MAX_ITER` is the course's 200 unless `LVIV_MAX_ITER` says otherwise.)
""")

code(r"""
score, output, model_state = train_model(model=ln_model, dataloader=dataloaders, max_iter=MAX_ITER)
""")

md(r"""
### Analyzing the trained network

Woohoo! We have now successfully trained our very first LN model on neuronal responses! But really, how good is the model?

During the training, the `train_model` function iteratively reported two values: the loss function (Poisson loss) value and the average correlation.

But what is this correlation? It's simply the correlation computed between our predicted neuronal responses $\hat{r}_i$ and the actual neuronal responses $r_i$ across images in the validation set. We then take the average correlation value **across neurons** to get average correlation.

Being a correlation, the highest possible value is of course 1.0, but practically this is never reached both due to 1) imperfection of our model but more fundamentally due to the noiseness of the neuron's responses. Because of the noise, even a perfect model would never reach a correlation of 1.0.

#### On the test set

The validation set was used to pick the best model (early stopping), so we judge the model on the **test set**, which it has never seen. `lviv_c.utility.measures` computes the single-trial correlation of every neuron over all test trials:
""")

code(r"""
from lviv_c.utility.measures import (
    model_predictions, get_correlations, get_avg_correlations, get_oracles,
    get_fraction_oracles, get_feve, get_explainable_var,
)
from lviv_c import plots

ln_test_corr = get_correlations(ln_model, dataloaders['test'])
print(f"LN model: mean test correlation {ln_test_corr.mean():.3f} over {len(ln_test_corr)} neurons")
""")

md(r"""Here is how predictions and responses compare for the neuron the model predicts best, trial by trial:""")

code(r"""
ln_model.eval()
test_responses, ln_predictions = model_predictions(ln_model, dataloaders['test'])
best_neuron = int(np.argmax(ln_test_corr))
plots.response_scatter(test_responses, ln_predictions, neuron=best_neuron);
""")

md(r"""And the distribution of test correlations over all neurons:""")

code(r"""
plots.correlation_histogram(ln_test_corr, label="LN");
""")

md(r"""
How much of this is the model, and how much is noise? The test set shows each image about 10 times, so we can ask how well the **average of the other repeats** predicts each trial — the *oracle*. No model of the image alone can be expected to beat it by much, so the **fraction of the oracle** a model reaches (the slope of its test correlation against the oracle, through the origin) says how much room is left. Two more measures use the repeats: the **correlation to average** (prediction vs. the mean response over repeats of each image, which averages the noise away), and the **fraction of explainable variance explained** (FEVE: explainable variance is the part of the variance that is not trial-to-trial noise; FEVE is averaged over neurons with FEV >= 0.15). These need a test loader whose batches hold all repeats of one image:
""")

code(r"""
test_repeats = load_dataset(path=data_path, batch_size=30, return_test_sampler=True)
oracles = get_oracles(test_repeats)
fev = get_explainable_var(test_repeats)
print(f"mean oracle correlation {oracles.mean():.3f}, mean FEV {fev.mean():.3f}, "
      f"{(fev >= 0.15).sum()} neurons with FEV >= 0.15")


def test_measures(model):
    corr = get_correlations(model, dataloaders['test'])
    return {
        "test corr": corr.mean(),
        "corr to average": get_avg_correlations(model, test_repeats).mean(),
        "fraction oracle": get_fraction_oracles(oracles, corr),
        "FEVE": get_feve(model, test_repeats, per_neuron=False) if (fev >= 0.15).any() else float("nan"),
    }, corr


ln_measures, _ = test_measures(ln_model)
ln_measures
""")

code(r"""
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(oracles, ln_test_corr, s=3, alpha=0.4)
lim = [0, max(oracles.max(), 0.1)]
ax.plot(lim, lim, 'k--', lw=1)
ax.plot(lim, np.multiply(lim, ln_measures["fraction oracle"]), 'r-', lw=1,
        label=f"fraction oracle {ln_measures['fraction oracle']:.2f}")
ax.set_xlabel('oracle correlation'); ax.set_ylabel('LN test correlation'); ax.legend(frameon=False);
""")

# ------------------------------------------------------------------------------------ CNN
md(r"""
## Going beyond Linear-Nonlinear model by using CNN

We saw that a simple LN model can be trained to achieve above chance performance in predicting the responses of mouse V1 neurons to natural images. But we certainly must be able to do better than that, right?

In the past decade, what has really driven system identification in visual neurons has been the use of convolutional neural networks (CNN). Below, we will try out a very simple CNN to see if we can already reach better performance than LN.

### A simpler CNN that trains as fast as the LN model

The course asked for a simpler CNN that trains just as fast as the LN model. `lviv_c.course.SimpleCNN` is one: a single convolution layer (16 filters of 13x13, stride 2) with batch norm and ELU, average pooling so that the readout sees as many features as the LN model sees pixels (16 x 9 x 16 = 2304), and a fully connected readout with the same L1 penalty. Each of its rectified filters is a small LN model; summing several of them is how the readout builds position- and phase-tolerant (complex-cell-like) responses that a single LN model cannot express. The extra cost over the LN model is one small convolution.
""")

code(r"""
import inspect
from lviv_c.course import SimpleCNN
print(inspect.getsource(SimpleCNN.__init__))
print(inspect.getsource(SimpleCNN.forward))
""")

code(r"""
simple_cnn_model = SimpleCNN(input_height=36, input_width=64, n_neurons=n_neurons)
score, output, model_state = train_model(model=simple_cnn_model, dataloader=dataloaders, max_iter=MAX_ITER)
""")

md(r"""### The course's CNN: four convolution layers""")

code("from collections import OrderedDict\n" + course_class("CNN"))


code(r"""
cnn_model = CNN(input_height=64, input_width=36, n_neurons=n_neurons)
score, output, model_state = train_model(model=cnn_model, dataloader=dataloaders, max_iter=MAX_ITER)
""")

# ------------------------------------------------------------------------------------ SOTA
md(r"""
## Trying out the State-of-the-Art (SOTA) model

Now that we got some sense on how we could go about training linear and nonlinear network models to predict V1 neuron responses to natural images, and we just saw how the nonlinear network seems to bring significant improvement to the performance beyond the LN network.

You might now be wondering, how good can we get? To get a sense of this, let's go ahead and train a state-of-the-art (SOTA) network model for mouse V1 responses to natual images as published in our recent work in [Lurz et al. ICLR 2021](https://github.com/sinzlab/Lurz_2020_code).

To keep things simple, the network implementation is provided in `lviv_c.models`, so you can build the model just by invoking a function!
""")

code(r"""
from lviv_c.models import build_lurz2020_model
model_config = {'init_mu_range': 0.55,
                'init_sigma': 0.4,
                'input_kern': 15,
                'hidden_kern': 13,
                'gamma_input': 1.0,
                'grid_mean_predictor': {'type': 'cortex',
                                        'input_dimensions': 2,
                                        'hidden_layers': 0,
                                        'hidden_features': 0,
                                        'final_tanh': False},
                'gamma_readout': 2.439
               }

sota_model = build_lurz2020_model(**model_config, dataloaders=dataloaders, seed=1234)
""")

code(r"""
score, output, model_state = train_model(model=sota_model, dataloader=dataloaders, max_iter=MAX_ITER)
""")

md(r"""
It turns out that we can have *linearized* version of the SOTA model. This effectively removes all nonlinear operations within the network except for the very last nonlinear activation, rendering the network into a **LN model** but with more complex architecture.
""")

code(r"""
linear_model_config = dict(model_config) # copy the config
linear_model_config['linear'] = True # set linear to True to make it a LN model!

sota_ln_model = build_lurz2020_model(**linear_model_config, dataloaders=dataloaders, seed=1234)
""")

md(r"""(The original notebook trains `sota_model` a second time in the next cell; we train the linear model `sota_ln_model`, as intended.)""")

code(r"""
score, output, model_state = train_model(model=sota_ln_model, dataloader=dataloaders, max_iter=MAX_ITER)
""")

# ------------------------------------------------------------------------------------ compare
md(r"""
## Comparing the models on the test set

All five models, measured the same way on the test set:
""")

code(r"""
models = {"LN": ln_model, "simple CNN": simple_cnn_model, "CNN": cnn_model,
          "Lurz 2020": sota_model, "Lurz 2020 linear": sota_ln_model}
measures, test_corrs = {}, {}
for name, model in models.items():
    measures[name], test_corrs[name] = test_measures(model)

print(f"{'model':18s} {'test corr':>9s} {'corr avg':>9s} {'frac oracle':>11s} {'FEVE':>7s}")
for name, m in measures.items():
    print(f"{name:18s} {m['test corr']:9.3f} {m['corr to average']:9.3f} "
          f"{m['fraction oracle']:11.3f} {m['FEVE']:7.3f}")
""")

code(r"""
plots.correlation_histogram({k: test_corrs[k] for k in ["LN", "CNN", "Lurz 2020"]},
                            title="Single-trial test correlation");
""")

code(r"""
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
plots.model_comparison(test_corrs["LN"], test_corrs["simple CNN"], "LN", "simple CNN", ax=axes[0])
plots.model_comparison(test_corrs["LN"], test_corrs["Lurz 2020"], "LN", "Lurz 2020", ax=axes[1])
plots.model_comparison(test_corrs["Lurz 2020 linear"], test_corrs["Lurz 2020"],
                       "Lurz 2020 linear", "Lurz 2020", ax=axes[2])
fig.tight_layout()
""")

md(r"""
The neuron the SOTA model predicts best — single trials on the left, and on the right the mean over the repeats of each test image, where most of the trial-to-trial noise has averaged out:
""")

code(r"""
sota_model.eval()
_, sota_predictions = model_predictions(sota_model, dataloaders['test'])
best = int(np.argmax(test_corrs["Lurz 2020"]))
fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
plots.response_scatter(test_responses, sota_predictions, neuron=best, ax=axes[0])
from lviv_c.utility.measures import model_predictions_repeats
targets, per_image = model_predictions_repeats(sota_model, test_repeats['test'])
plots.response_scatter(np.stack([t.mean(0) for t in targets]), per_image, neuron=best, ax=axes[1])
axes[1].set_xlabel('mean recorded response over repeats');
""")

# ------------------------------------------------------------------------------------ analysis
md(r"""
# Analyzing the trained model to gain insights into the brain

By this point we have `sota_model` and `sota_ln_model`, the best nonlinear and linear models with the architecture of Lurz et al. 2021. What have they learned about the neurons?

## Gradient receptive fields

For a linear neuron, the receptive field is the weight image $w$: the response changes by $w^\top \delta$ when the image changes by $\delta$. For a nonlinear model we can ask the same question locally: how does the predicted response change with each pixel *around a given image*? That is the gradient $\partial f_n(x) / \partial x$ at $x_0$ — the **gradient receptive field**. We evaluate it at a uniform gray image at the mean pixel value of the data. `lviv_c.analysis.gradient_rf` computes it with the C autograd.
""")

code(r"""
from lviv_c.analysis import gradient_rf, generate_mei, cross_activation

stats = dataloaders['train'].dataset.statistics
mean_pixel = float(np.asarray(stats.images.all.mean).ravel()[0])
std_pixel = float(np.asarray(stats.images.all.std).ravel()[0])
gray = np.full((1, images.shape[2], images.shape[3]), mean_pixel, dtype=np.float32)

best_neurons = [int(i) for i in np.argsort(-test_corrs["Lurz 2020"])[:6]]
sota_rfs = gradient_rf(sota_model, best_neurons, gray)
sota_ln_rfs = gradient_rf(sota_ln_model, best_neurons, gray)
titles = [f"neuron {i}" for i in best_neurons]
plots.image_grid(sota_rfs, titles=titles, suptitle="Lurz 2020: gradient RFs");
plots.image_grid(sota_ln_rfs, titles=titles, suptitle="Lurz 2020 linear: gradient RFs");
""")

md(r"""
## Most exciting inputs (MEIs)

The gradient RF is local. To find what a neuron "likes" globally, we search for the image that drives the model neuron most: starting from noise, we follow the gradient of the neuron's predicted response with respect to the image (gradient ascent with momentum). The image's mean and contrast are held at those of the natural images (otherwise the answer is "infinite contrast"): the optimised image $x$ is shown to the model as $T(x) = (x - \bar{x}) / \mathrm{std}(x) \cdot s + m$. `generate_mei` runs this loop in C and returns the activation over the iterations and the image.
""")

code(r"""
# start: the gray image plus faint noise (the constraint rescales it to the data's contrast,
# so small starting values let the gradient steps shape the image quickly)
rng = np.random.default_rng(0)
start = gray + rng.normal(0, 0.1, gray.shape).astype(np.float32)
sota_trace, sota_meis = generate_mei(sota_model, start, best_neurons, iterations=MEI_ITER,
                                     mean_constr=mean_pixel, std_constr=std_pixel)
ln_trace, sota_ln_meis = generate_mei(sota_ln_model, start, best_neurons, iterations=MEI_ITER,
                                      mean_constr=mean_pixel, std_constr=std_pixel)
plots.activation_trace(sota_trace, labels=titles);
plots.image_grid(sota_meis - mean_pixel, titles=titles, suptitle="Lurz 2020: MEIs");
plots.image_grid(sota_ln_meis - mean_pixel, titles=titles, suptitle="Lurz 2020 linear: MEIs");
""")

md(r"""
For the linear model, the MEI under a mean/contrast constraint is just its (normalized) receptive field; for the nonlinear model the MEI can differ from the gradient RF, for example for complex cells that respond to a grating at any phase. Do the MEIs drive their own neuron more than the other neurons' MEIs do? The **cross-activation** matrix shows each MEI's predicted response for each neuron, divided by the neuron's maximum:
""")

code(r"""
plots.cross_activation_matrix(cross_activation(sota_model, sota_meis, best_neurons), best_neurons);
""")

md(r"""
### Checking against the ground truth (synthetic scans only)

On a synthetic scan we know each neuron's true filter, so we can check what the models recovered. For the simple cells among the best predicted neurons, we compare the true filter with the models' gradient RFs and MEIs:
""")

code(r"""
gt_path = os.path.join(data_path, "ground_truth")
if os.path.isdir(gt_path):
    from lviv_c.synthetic import load_ground_truth
    gt = load_ground_truth(data_path, mmap=True)
    simple = [i for i in np.argsort(-test_corrs["Lurz 2020"]) if gt["cell_type"][i] == "simple"][:6]
    filters = np.asarray(gt["filters"])[simple]
    rfs = gradient_rf(sota_model, simple, gray)
    _, meis = generate_mei(sota_model, start, simple, iterations=MEI_ITER,
                           mean_constr=mean_pixel, std_constr=std_pixel, progress=False)
    r_rf = [np.corrcoef(a.ravel(), f.ravel())[0, 1] for a, f in zip(rfs, filters)]
    r_mei = [np.corrcoef(a.ravel(), f.ravel())[0, 1] for a, f in zip(meis, filters)]
    print(f"correlation with the true filter: gradient RF {np.mean(r_rf):.3f}, MEI {np.mean(r_mei):.3f}")
    plots.image_grid(np.concatenate([filters, rfs, meis - mean_pixel]), ncols=len(simple),
                     suptitle="simple cells: true filters (top), gradient RFs, MEIs (bottom)");
else:
    print("not a synthetic scan: no ground truth to compare with")
""")


# ------------------------------------------------------------------------------------ writer
def notebook():
    cells = []
    for kind, src in CELLS:
        lines = src.split("\n")
        source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "course_lviv_c.ipynb")
    nb = notebook()
    for i, c in enumerate(nb["cells"]):   # nbformat 4.5 wants cell ids
        c["id"] = f"cell-{i:03d}"
    with open(out, "w") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(out)


if __name__ == "__main__":
    main()
