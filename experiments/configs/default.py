"""The default config: every field, with its meaning, units and allowed values.

PG-MoE on the default data family (2-D gaussian_wells, 32x32, L = 20 bohr),
trained on labelled data plus the variational-energy term, with a 16x16
coarse-envelope gate (the recipe of RESULTS.md's 32x32 runs; ``make demo``
runs experiments/configs/quickstart.py, a learned cascade without experts,
and quickstart_pgmoe.py is this with a full-grid gate). Other
configs start from :func:`get_config` and change a few fields; a field that
is not defined here cannot be set anywhere (the config is locked), so a typo
in ``--config.x.y=...`` fails loudly.

    python -m experiments.generate_data --standard_splits --grid=32 \
        --num=2000 --num_eval=200 --out=data/quickstart
    python -m experiments.train --config=experiments/configs/default.py \
        --workdir=runs/default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config."""
  config = ml_collections.ConfigDict()

  # Root PRNG seed (int): parameter initialisation, the per-step keys
  # fold_in(key, step) and the data order of every epoch all derive from it.
  config.seed = 0
  # Floating dtype of parameters, inputs and training: "float32" (fast, what
  # accelerators run natively) or "float64" (needs --jax_enable_x64).
  config.dtype = "float32"

  # The grid the model works on. With data.train set, the dataset's grid
  # must equal it (the run stops otherwise); in label-free mode it defines the
  # grid the streamed potentials live on.
  config.grid = grid = ml_collections.ConfigDict()
  # Interior points per axis (n1, ..., nd), d = 1, 2 or 3, each n >= 3.
  grid.shape = (32, 32)
  # Box length in bohr, the same on every axis (the box is [-L/2, L/2]^d).
  grid.length = 20.0
  # Boundary condition: "dirichlet" (hard walls) or "periodic".
  grid.boundary = "dirichlet"

  config.data = data = ml_collections.ConfigDict()
  # Training dataset directory (from experiments.generate_data); "" for none,
  # allowed only with loss.mode = "label_free".
  data.train = "data/quickstart/train"
  # Validation dataset directory, evaluated every train.eval_every_steps and
  # at every checkpoint; "" for no validation (then no best checkpoint).
  data.val = "data/quickstart/val"
  # Labelled training samples to use: -1 for all, else the first N samples
  # of data.train (scarce-label runs).
  data.num_train = -1
  # Potential family the unlabelled potentials are streamed from
  # (semi_supervised and label_free modes): a name in
  # pgmoe_jax.potentials.FAMILIES ("gaussian_wells", "harmonic",
  # "double_well", "box_well", "woods_saxon", "random_smooth"), "mixture"
  # (a weighted mixture of them, configured by data.mixture; the universal
  # model's stream, experiments/configs/universal.py), or a user family
  # "package.module:function" (importable on PYTHONPATH).
  data.family = "gaussian_wells"
  # Overrides of the family's (low, high) ranges for the stream, e.g.
  # depth=(1.0, 10.0) (Hartree) or num_wells=(1, 4); empty: the family's
  # defaults (the ranges the default datasets are drawn with). Set in a
  # config file: the locked config takes no new keys from the command line.
  # Must stay empty with data.family = "mixture" (see data.mixture).
  data.ranges = ml_collections.ConfigDict()
  # The stream of data.family = "mixture" (ignored for other families):
  # pgmoe_jax.potentials.mixture. Each potential is a component family
  # drawn with probability proportional to its weight, plus, with
  # probability sum_probability, a second independent component draw, plus
  # a constant uniform in offset. These fields restate the universal
  # defaults (pgmoe_jax.potentials.UNIVERSAL, SUM_PROBABILITY, OFFSET;
  # tests/test_mixture.py checks that they agree), so config.json records
  # every range a run trained on. Every field can be set from the command
  # line, e.g. --config.data.mixture.components.harmonic.weight=0 or
  # --config.data.mixture.components.box_well.depth="(1.0, 10.0)".
  data.mixture = mixture = ml_collections.ConfigDict()
  # Probability in [0, 1] that a potential is the sum of two component
  # draws (a well in a trap, a double well with bumps...).
  mixture.sum_probability = 0.25
  # (low, high) of the constant added to every potential, Hartree: the zero
  # of energy is arbitrary (it shifts E0 and leaves psi0 as it is).
  mixture.offset = (-10.0, 10.0)
  # True: each component draws only its share of the batch (rows grouped by
  # component, the left-over rows picked at random), about as many times
  # cheaper as there are components (at 64x64 the unstratified stream cost
  # more than the model's step); False: every potential's component drawn
  # independently, as datasets are. experiments/configs/universal.py: True.
  mixture.stratified = False
  # The components, name -> fields: "weight" (relative, >= 0, not all 0; 0
  # leaves the component out), "family" (only where it differs from the
  # name) and the family's ranges (pgmoe_jax.potentials.families documents
  # each; lengths in bohr, energies in Hartree). A typo in a name or range
  # stops the run with an error that names it.
  mixture.components = components = ml_collections.ConfigDict()
  # Sums of 1-8 Gaussian wells (gaussian_wells).
  components.gaussian_wells = c = ml_collections.ConfigDict()
  # Relative probability of the component.
  c.weight = 1.0
  # Inclusive range of the number of wells.
  c.num_wells = (1, 8)
  # Depth of each well (or of the well, the barrier), Hartree.
  c.depth = (0.5, 10.0)
  # Standard deviation of each well, bohr.
  c.width = (0.6, 3.0)
  # Centres lie in [-f L, f L] per axis, f = centre_fraction.
  c.centre_fraction = 0.3
  # Anisotropic harmonic traps (harmonic).
  components.harmonic = c = ml_collections.ConfigDict()
  c.weight = 1.0
  # Angular frequency per axis, Hartree.
  c.omega = (0.3, 2.0)
  c.centre_fraction = 0.1
  # Tilted quartic double wells (double_well).
  components.double_well = c = ml_collections.ConfigDict()
  c.weight = 1.0
  c.depth = (0.5, 8.0)
  # Distance between the two minima, bohr.
  c.separation = (3.0, 8.0)
  # Dimensionless tilt of one well below the other.
  c.asymmetry = (-0.5, 0.5)
  c.omega = (0.5, 2.0)
  # Ceiling on V, Hartree (a scalar).
  c.cap = 30.0
  # Nearly symmetric double wells: near-degenerate tunnel doublets.
  components.double_well_symmetric = c = ml_collections.ConfigDict()
  c.weight = 1.0
  # The family a component draws from, when it differs from its name.
  c.family = "double_well"
  c.depth = (1.0, 8.0)
  c.separation = (3.0, 8.0)
  c.asymmetry = (-0.002, 0.002)
  c.omega = (0.5, 2.0)
  c.cap = 30.0
  # Sharp-edged flat-bottomed rectangular wells (box_well).
  components.box_well = c = ml_collections.ConfigDict()
  c.weight = 1.0
  c.depth = (2.0, 20.0)
  # Half-width of the box per axis, bohr.
  c.half_width = (0.75, 5.0)
  c.centre_fraction = 0.125
  # Smooth-edged flat-bottomed elliptical wells (woods_saxon).
  components.woods_saxon = c = ml_collections.ConfigDict()
  c.weight = 1.0
  c.depth = (2.0, 20.0)
  # Semi-axis per axis, bohr.
  c.radius = (1.0, 5.0)
  # Width of the Fermi-function edge, bohr.
  c.diffuseness = (0.3, 1.5)
  c.centre_fraction = 0.125
  # Windowed Gaussian random landscapes (random_smooth).
  components.random_smooth = c = ml_collections.ConfigDict()
  c.weight = 1.0
  c.depth = (0.5, 20.0)
  # Covariance length of the random field, bohr.
  c.correlation_length = (0.7, 4.0)
  # Width of the Gaussian window that fades the field towards the walls,
  # bohr (a scalar).
  c.window = 5.0

  # The model: "name" picks it, every other field is passed to it and must
  # be one of that model's fields (pgmoe_jax.models.build_model).
  config.model = model = ml_collections.ConfigDict()
  # "pgmoe" (Physics-Guided Mixture-of-Experts) or "dense" (the monolithic
  # baseline; see experiments/configs/dense.py for its fields).
  model.name = "pgmoe"
  # Tiles per axis (int); must divide grid.shape on every axis.
  model.tiles = 4
  # Grid points each expert sees beyond its tile on every side.
  model.halo = 2
  # The experts (pgmoe_jax.models.EXPERTS): "mlp" (each patch flattened
  # into an MLP; what a config.json without this field means) or "conv" (a
  # small CNN on each patch, pgmoe_jax.models.conv_experts) or "none" (the
  # gate alone, e.g. with gate="sweeps").
  model.experts = "mlp"
  # Hidden layer widths of each expert MLP ("conv": channels of each hidden
  # convolution).
  model.expert_hidden = (64, 64)
  # True: one expert for all tiles, told its tile by a learned embedding;
  # False: separate experts (parameters stacked on a tile axis, vmapped).
  model.shared_expert = True
  # Size of the tile embedding (shared_expert only).
  model.embedding_dim = 8
  # The gate that places the particle: "envelope" (exact ground state of the
  # coarse-grid Hamiltonian, no parameters), "mlp" (a learned log-envelope)
  # or "both" (envelope plus a learned correction), or "sweeps" (the
  # envelope's cascade with trained sweep step sizes; needs
  # envelope_sweeps), or "start_net" (as "sweeps", plus a network of
  # gate_hidden that starts the cascade's coarsest level; needs
  # envelope_start), or "ritz_net" (as "sweeps", plus a network of
  # gate_hidden whose output is an extra Rayleigh-Ritz direction in every
  # iteration of the cascade's coarsest level; needs iterations there), or
  # "start_ritz_net" (both networks, each of gate_hidden: the start
  # network's state begins the coarsest level's iterations and the
  # direction network's joins each of their Rayleigh-Ritz steps).
  # "envelope" is the default: as accurate as "both" on test_interp and far
  # better out of distribution, where a learned global gate memorises the
  # training family (WORKSPACE.md, "Models and training, in short").
  model.gate = "envelope"
  # Coarse-grid points per axis for the gate (int >= 2, or one per axis);
  # must divide grid.shape on every axis; None: the full grid (the gate's
  # solve at full resolution, a fixed number of iterations; experiments/
  # configs/universal.py). 16 on a 32x32 grid: the coarse ground state
  # alone has a median infidelity of 0.035 (0.46 with 8). Typed as an int
  # (a FieldReference), so --config.model.coarse=8 still works on a config
  # that set None.
  model.coarse = ml_collections.FieldReference(16, field_type=int)
  # Iterations of the fixed-cost solver on the gate's grid (int >= 0;
  # envelope_solver "fixed" or "lobpcg"; not used by "eigh"): 6 reach the
  # exact envelope's accuracy at 16x16 for a fraction of the cost. 0 only
  # with a start grid (envelope_start): the gate is then the interpolated
  # start alone.
  model.envelope_iters = 6
  # How the gate's coarse Hamiltonian is solved: "fixed", a batched
  # single-vector LOBPCG built for throughput (pgmoe_jax.solvers.fixed_iters:
  # no vmap, no while loop, matmuls only in the preconditioner's sine
  # transforms), envelope_iters iterations; "lobpcg", the vmapped reference
  # LOBPCG with a 2-vector block (the only iterative solver of releases
  # 0.1.0 and 0.2.0), envelope_iters iterations; or "eigh", the exact dense
  # eigh (cost grows like coarse^(3d): cheap at 8x8, costly from 16x16 on).
  model.envelope_solver = "fixed"
  # Coarse-to-fine gate (envelope_solver "fixed" only): None starts the
  # gate's iterations from the kinetic operator's lowest mode; s (int >= 3,
  # dividing `coarse`, or one per axis) starts them from the ground state
  # on an s-point grid, interpolated: it finds the right well for a
  # fraction of the cost, so fewer gate iterations reach the same envelope
  # (at 64x64, a 32-point start plus 2 iterations beats 4 iterations from
  # the kinetic mode: median envelope error 0.39 against 0.72 mHa, p90 1.1
  # against 16). A typed None, so --config.model.envelope_start=32 works.
  model.envelope_start = ml_collections.config_dict.placeholder(int)
  # Iterations on the start grid, one count per level, coarsest first:
  # (6,) runs 6 on the start grid; (4, 2) a chain of start grids halving
  # per axis below envelope_start (with envelope_start=32 on a 64x64 gate:
  # 4 iterations at 16x16, 2 at 32x32, then envelope_iters at 64x64). 0 at
  # a level: interpolate only, as pgmoe_jax.solvers.cascade; on the
  # coarsest level only with envelope_start_exact.
  model.envelope_start_iters = (6,)
  # True: the coarsest start level is solved exactly by a dense eigh
  # (cheap up to 8x8) and its count in envelope_start_iters is not used,
  # as cascade's exact_coarsest; False: envelope_start_iters iterations
  # there from the kinetic operator's lowest mode.
  model.envelope_start_exact = False
  # Chebyshev-Jacobi sweeps on each cascade level's interpolated start
  # (pgmoe_jax.solvers.smoothing; one stencil application each), one count
  # per level, coarsest first: the start levels, then the gate's grid; the
  # coarsest 0. (0, 4, 8) with envelope_start=32, envelope_start_iters=
  # (4, 0) on a 64x64 gate is the cascade (4, 0, 0) with sweeps (0, 4, 8).
  # None: no sweeps (needs a start grid otherwise). A typed None, so
  # --config.model.envelope_sweeps="(0, 4, 8)" works.
  model.envelope_sweeps = ml_collections.config_dict.placeholder(tuple)
  # Hidden layer widths of the gate network (gate "mlp" or "both"; of each
  # network of "start_net", "ritz_net" and "start_ritz_net").
  model.gate_hidden = (64,)
  # gates "start_net" and "start_ritz_net" only: the start network also
  # sees the minima of the gate's potential over the coarsest level's
  # blocks (beside their means, which hide a narrow deep well).
  model.gate_start_minima = False
  # Potentials are divided by this (Hartree) before entering the networks.
  model.potential_scale = 10.0
  # Scale of the experts' last layer at initialisation (small: an untrained
  # model is its gate's envelope).
  model.expert_init_scale = 0.01
  # Scaled potentials enter the networks squashed into (-c, c) by
  # c tanh(x / c), so steep walls (harmonic, quartic) stay in range; 0: off.
  model.input_clip = 3.0
  # Bound (tanh) on the learned log-amplitude corrections of experts and the
  # gate network: out of distribution the physics envelope dominates; 0: off.
  model.correction_bound = 5.0
  # True: the learned corrections are multiplied by 1 / (1 + max(x - 1,
  # 0)^2), x = (V - E_c) / potential_scale, so deep in classically
  # forbidden regions, beyond anything the training potentials showed, the
  # state follows the physics envelope (factor exactly 1 for x <= 1);
  # False: undamped (pgmoe_jax.models.pgmoe.PGMoE).
  model.damp_forbidden = True

  # How the devices are laid out (pgmoe_jax.training.loop.make_mesh): a
  # "batch" axis of mesh.data devices (-1: every device left over) that
  # split each batch, times a "space" axis of mesh.space devices that split
  # every grid along its first axis (potentials, states, the experts'
  # tiles; halos and the gate's transforms are exchanged between them, the
  # gate's coarse solve is copied to each), for grids too big for one
  # device. mesh.space must divide the first grid axis and model.tiles on
  # it.
  config.mesh = mesh = ml_collections.ConfigDict()
  # Devices on the "batch" axis; -1: every device the space axis leaves.
  mesh.data = -1
  # Devices on the "space" axis (1: no spatial split).
  mesh.space = 1

  # The objective (pgmoe_jax.training.losses).
  config.loss = loss = ml_collections.ConfigDict()
  # "supervised" (labelled batches), "semi_supervised" (labelled batches plus
  # the energy of streamed potentials) or "label_free" (energy of streamed
  # potentials only: no labels, no eigen-solver).
  loss.mode = "supervised"
  # Supervised term: "infidelity" (1 - F, blind to scale and sign) or "mse"
  # (of the normalised states).
  loss.supervised = "infidelity"
  # Weight of the supervised term (dimensionless).
  loss.supervised_weight = 1.0
  # Weight of the variational energy term, per Hartree of E[psi] - E0
  # (labelled) or E[psi] (streamed); 0 for plain supervised learning. Must
  # be positive in semi_supervised and label_free modes.
  loss.energy_weight = 1.0
  # Energy weight schedule: "constant", or "anneal" (a cosine ramp from 0 to
  # energy_weight over anneal_steps; label_free always uses full weight).
  loss.schedule = "constant"
  # Steps of the anneal ramp (schedule "anneal").
  loss.anneal_steps = 2000
  # Streamed potentials per step (semi_supervised and label_free).
  loss.unlabelled_batch_size = 64
  # What the streamed potentials' term is (weighted by energy_weight):
  # "energy" (the mean variational energy E[psi], Ha: minimal only at the
  # ground state, and dominated by the batch's worst states) or
  # "log_residual" (the mean log of each state's squared eigen-residual
  # |H psi - E psi|^2 / |psi|^2, in Ha^2: every state counts alike,
  # whatever its error; zero residual at any eigenstate, so only for models
  # that start near the ground state, such as gate="sweeps").
  loss.unlabelled_objective = "energy"
  # With "log_residual": plus this weight (1/Ha, >= 0) times the streamed
  # states' mean energy. The residual of a state that mixes a tunnelling
  # doublet is far below its energy error (about sqrt(dE * splitting)), so
  # the log residual alone hardly sees which well the state sits in; 0: the
  # log residual alone.
  loss.unlabelled_energy_weight = 0.0
  # With "log_residual": p >= 0; p > 0 takes (1/p) log mean(r2^p) over the
  # streamed states instead of mean(log r2) (r2 the squared residuals),
  # which weighs each state's gradient by r2^p: the worst states count
  # more. 0: the mean log.
  loss.residual_power = 0.0
  # Apply a random exact grid symmetry (rotation or reflection) to each
  # labelled batch.
  loss.augment = True

  # The optimiser: clip by global norm, then AdamW with linear warmup and
  # cosine decay (pgmoe_jax.training.step.make_optimizer).
  config.optim = optim = ml_collections.ConfigDict()
  # Peak learning rate, reached at the end of the warmup.
  optim.learning_rate = 1e-3
  # Steps of linear warmup from 0 to learning_rate; < train.num_steps.
  optim.warmup_steps = 100
  # Final learning rate at train.num_steps, as a fraction of learning_rate.
  optim.end_learning_rate_factor = 0.02
  # Decoupled (AdamW) weight decay per step, relative to the learning rate;
  # 0 for none.
  optim.weight_decay = 1e-4
  # Clip gradients to this global norm; 0 for no clipping.
  optim.grad_clip = 1.0

  # The loop (pgmoe_jax.training.loop.train_and_evaluate).
  config.train = train = ml_collections.ConfigDict()
  # Total optimiser steps; rerunning with a larger value continues a run.
  train.num_steps = 20_000
  # Labelled samples per step, split across devices (a multiple of the
  # device count).
  train.batch_size = 64
  # Append mean training metrics to workdir/metrics.jsonl every this many
  # steps (also when non-finite losses are checked).
  train.log_every_steps = 100
  # Evaluate on data.val every this many steps (and at every checkpoint).
  train.eval_every_steps = 1000
  # Save a checkpoint every this many steps and at the end.
  train.checkpoint_every_steps = 1000
  # Keep this many latest checkpoints (plus the best by best_metric).
  train.keep_checkpoints = 3
  # Validation batch size (a multiple of the device count).
  train.eval_batch_size = 256
  # Validation metric that picks the best checkpoint, lower is better:
  # "val/<infidelity|energy_error_mha|residual>_<mean|median|p90>".
  train.best_metric = "val/energy_error_mha_median"

  return config
