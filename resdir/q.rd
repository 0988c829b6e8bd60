<resource schema="retrspect" resdir=".">
  <meta name="creationDate">2026-11-22T00:00:00Z</meta>
  <meta name="title">retrspect: searchable stellar and galaxy spectra</meta>
  <meta name="description">
    Real optical spectra of stars, galaxies and quasars from public spectral
    libraries (MILES, STELIB, MaNGA spaxels, the X-shooter Spectral Library and
    quasar spectra shipped with linetools), published through SSAP, ObsCore,
    Datalink/SODA and TAP.  Every spectrum is served as an IVOA Spectral Data
    Model VOTable (or FITS) with vacuum wavelengths in Angstrom; published
    labels (effective temperature, surface gravity, metallicity, MK type,
    radial velocity, redshift) are columns of the spectra table so that they
    can be used for selection and for validating learned quantities.
  </meta>
  <meta name="subject">spectroscopy</meta>
  <meta name="subject">stellar-spectral-types</meta>
  <meta name="subject">galaxy-spectroscopy</meta>
  <meta name="subject">quasars</meta>
  <meta name="creator">Sanchez-Blazquez, P.; Le Borgne, J.-F.; retrspect team</meta>
  <meta name="instrument">Various (INT/IDS, Isaac Newton and Jacobus Kapteyn telescopes, SDSS/MaNGA, VLT/X-shooter, ...)</meta>
  <meta name="facility">Various</meta>
  <meta name="source">2006MNRAS.371..703S</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Archive</meta>
  <meta name="coverage.waveband">Optical</meta>
  <meta name="ssap.dataSource">pointed</meta>
  <meta name="ssap.creationType">archival</meta>
  <meta name="productType">spectrum</meta>
  <meta name="ssap.testQuery">MAXREC=1</meta>

  <table id="raw_data" onDisk="True" adql="hidden" primary="obs_id"
      namePath="//ssap#instance">
    <meta name="description">Per-spectrum metadata as ingested; TAP users
      see it through the spectra view.</meta>
    <!-- plain MJD: votlint warns on DaCHS's non-DALI xtype "mjd" -->
    <column original="ssa_dateObs" xtype=""/>
    <LOOP listItems="ssa_dstitle ssa_targname ssa_length
      ssa_specres ssa_specstart ssa_specend ssa_pubDID ssa_targclass
      ssa_redshift ssa_snr">
      <events>
        <column original="\item"/>
      </events>
    </LOOP>
    <column name="ssa_collection" type="text"
      utype="ssa:DataID.Collection" ucd="meta.id"
      tablehead="Collection" verbLevel="15"
      description="The spectral library or survey this spectrum belongs to."/>
    <column name="ssa_fluxunit" type="text"
      utype="ssa:Char.FluxAxis.Unit" ucd="meta.unit"
      tablehead="Flux unit" verbLevel="20"
      description="Unit of the flux in the served spectrum (empty for
        relative fluxes)."/>
    <column name="ssa_fluxcalib" type="text"
      utype="ssa:Char.FluxAxis.Calibration" ucd="meta.code.qual"
      tablehead="Flux calib." verbLevel="25"
      description="Type of flux calibration (ABSOLUTE, RELATIVE, UNCALIBRATED)."/>
    <column name="ssa_instrument" type="text"
      utype="ssa:DataID.Instrument" ucd="meta.id;instr"
      tablehead="Instrument" verbLevel="20"
      description="Instrument or library that produced the spectrum."/>

    <mixin>//products#table</mixin>
    <mixin>//ssap#plainlocation</mixin>
    <mixin>//ssap#simpleCoverage</mixin>
    <FEED source="//scs#splitPosIndex"
      long="degrees(long(ssa_location))"
      lat="degrees(lat(ssa_location))" columns="ssa_location"/>

    <column name="datalink" type="text"
      ucd="meta.ref.url"
      tablehead="Datalink"
      description="A link to a datalink document for this spectrum."
      verbLevel="15" displayHint="type=url">
      <property name="targetType"
       >application/x-votable+xml;content=datalink</property>
      <property name="targetTitle">Datalink</property>
    </column>

    <column name="obs_id" type="text" required="True"
      ucd="meta.id;meta.main" tablehead="Obs. id" verbLevel="1"
      description="Short identifier of the spectrum within this archive
        (collection prefix and file name, plus the spectrum's index for files
        holding several spectra)."/>
    <column name="source_file" type="text" required="True"
      ucd="meta.ref" tablehead="Source" verbLevel="30"
      description="File the spectrum was read from, relative to the
        archive's inputs directory."/>
    <column name="source_index" type="integer" required="True"
      ucd="meta.number" tablehead="Idx" verbLevel="30"
      description="Position of the spectrum within its source file.">
      <values nullLiteral="-1"/>
    </column>
    <column name="air_wavelengths" type="boolean" required="True"
      tablehead="Air?" verbLevel="30"
      description="True if the original file gives air wavelengths; the
        served spectra are always converted to vacuum."/>
    <column name="resolving_power" type="real"
      ucd="spect.resolution" tablehead="R" verbLevel="15"
      description="Resolving power lambda/delta lambda at the middle of the
        spectrum (as published for the library)."/>
    <column name="teff" type="real" unit="K"
      ucd="phys.temperature.effective" tablehead="Teff" verbLevel="10"
      description="Effective temperature published by the library."/>
    <column name="logg" type="real" unit="log(cm.s**-2)"
      ucd="phys.gravity" tablehead="log g" verbLevel="10"
      description="Surface gravity published by the library."/>
    <column name="feh" type="real"
      ucd="phys.abund.Z" tablehead="[Fe/H]" verbLevel="10"
      description="Metallicity [Fe/H] published by the library."/>
    <column name="mk_type" type="text"
      ucd="src.spType" tablehead="MK type" verbLevel="10"
      description="MK spectral type published by the library."/>
    <column name="rv_catalogue" type="real" unit="km/s"
      ucd="spect.dopplerVeloc.opt" tablehead="RV" verbLevel="15"
      description="Heliocentric radial velocity published by the library."/>

    <index columns="source_file"/>
    <index columns="ssa_collection"/>
  </table>

  <STREAM id="parallel_index_build">
    <!-- PostgreSQL sizes index-build workers by the table's size, so a
      table of vectors (small on disk, slow to index) gets none; for the
      first build after a bulk import, allow as many as the server's
      max_parallel_maintenance_workers, then restore the default (query
      plans use the same setting) -->
    <script type="preIndex" lang="SQL" name="parallel index build">
      ALTER TABLE \\qName SET (parallel_workers = 8)
    </script>
    <script type="postCreation" lang="SQL" name="default parallelism">
      ALTER TABLE \\qName RESET (parallel_workers)
    </script>
  </STREAM>

  <table id="ml_results" onDisk="True" adql="True" primary="pubdid">
    <meta name="description">Learned latent vectors and machine-learning
      results for every spectrum, computed at ingest by the ONNX models
      shipped with retrspect (a variational autoencoder, a classifier and a
      velocity/redshift estimator).  Every row names the models that made
      it.  Join to retrspect.spectra on pubdid = ssa_pubdid.  Find similar
      spectra by ordering on the distance between latent vectors.</meta>
    <!-- the distance the VAE's latent space is trained for; ingest refuses
      a model trained for another one, and the HNSW index is built for it -->
    <property name="latentMetric">l2</property>
    <!-- its latent column is the space "generic" (vo_services.spaces) -->
    <property name="space">generic</property>

    <column name="pubdid" type="text" required="True"
      ucd="meta.ref.ivoid" tablehead="Pub. DID" verbLevel="1"
      description="Publisher DID of the spectrum (ssa_pubdid in
        retrspect.spectra)."/>
    <column name="obs_id" type="text" required="True"
      ucd="meta.id" tablehead="Obs. id" verbLevel="1"
      description="Short identifier of the spectrum (as in
        retrspect.spectra)."/>
    <column name="latent" type="vector(32)"
      ucd="src.class.struct" tablehead="Latent" verbLevel="15"
      description="Mean of the spectrum's encoding in the VAE's latent
        space; use the gavo_ distance functions on it for similarity
        search.  NULL when the spectrum covers less than half of the
        models' grid (see grid_coverage)."/>
    <column name="grid_coverage" type="real"
      ucd="stat.fit.param" tablehead="Grid cov." verbLevel="15"
      description="Fraction of the models' wavelength grid (3600-7400
        Angstrom, vacuum) that the spectrum's good pixels cover.  Below
        0.5 the models give no answer: latent, class, redshift and anomaly
        are NULL, since they would be made from padding."/>
    <column name="latent_sigma" type="real[32]"
      ucd="stat.stdev" tablehead="Latent sigma" verbLevel="25"
      description="Standard deviation of the latent encoding, per
        dimension (from the VAE's log-variance)."/>
    <column name="anomaly" type="real"
      ucd="stat.fit.chi2" tablehead="Anomaly" verbLevel="10"
      description="Noise-weighted mean squared residual of the VAE's
        reconstruction: large values flag spectra unlike the training
        data."/>
    <column name="latent_model" type="text"
      ucd="meta.code" tablehead="VAE" verbLevel="20"
      description="Model that made the latent vector and anomaly score
        (name-version-content hash)."/>
    <column name="ml_class" type="text"
      ucd="src.class" tablehead="Class" verbLevel="5"
      description="Most probable class: an MK class O..M,
        emission_line_star, galaxy or qso.  NULL (unknown) when the models
        cannot place the spectrum: it covers too little of the classifier's
        grid, or its anomaly is beyond 99% of the validation spectra's; the p_*
        columns are still given then."/>
    <column name="class_probability" type="real"
      ucd="stat.probability" tablehead="P(class)" verbLevel="10"
      description="Calibrated probability of ml_class (NULL with it)."/>
    <column name="class_uncertainty" type="real"
      ucd="stat.error" tablehead="Class unc." verbLevel="15"
      description="Predictive uncertainty of the classification (entropy
        of the class probabilities, nats)."/>
    <LOOP listItems="o b a f g k m emission_line_star galaxy qso">
      <events>
        <column name="p_\item" type="real"
          ucd="stat.probability" tablehead="P(\item)" verbLevel="25"
          description="Calibrated probability of class \item."/>
      </events>
    </LOOP>
    <column name="class_model" type="text"
      ucd="meta.code" tablehead="Classifier" verbLevel="20"
      description="Model that made the classification."/>
    <column name="redshift" type="double precision"
      ucd="src.redshift" tablehead="z" verbLevel="10"
      description="Redshift estimated from the spectrum (observed frame,
        vacuum rest wavelengths)."/>
    <column name="redshift_err" type="double precision"
      ucd="stat.error;src.redshift" tablehead="err(z)" verbLevel="15"
      description="Uncertainty of redshift."/>
    <column name="velocity" type="real" unit="km/s"
      ucd="spect.dopplerVeloc.opt" tablehead="RV" verbLevel="10"
      description="Radial velocity c*z (meaningful for stars)."/>
    <column name="velocity_err" type="real" unit="km/s"
      ucd="stat.error;spect.dopplerVeloc.opt" tablehead="err(RV)"
      verbLevel="15" description="Uncertainty of velocity."/>
    <column name="velocity_model" type="text"
      ucd="meta.code" tablehead="Velocity model" verbLevel="20"
      description="Model that made redshift and velocity."/>
    <column name="snr" type="real"
      ucd="stat.snr" tablehead="SNR" verbLevel="15"
      description="Median signal-to-noise ratio per pixel of the
        spectrum."/>

    <index columns="obs_id"/>
    <index columns="ml_class"/>
    <index columns="latent" name="ml_results_latent_hnsw" method="hnsw"
      >latent vector_l2_ops</index>
    <FEED source="parallel_index_build"/>
  </table>


  <!-- One table, view, rowmaker and re-embedding per plug-in latent space:
    an ONNX file of kind "space" in the models directory (models/CONTRACT.md).
    Generated from what the files say of themselves whenever the RD is
    loaded (vo_services.spaces), so adding or removing a space never edits
    this file; `retrspect import` creates, fills and drops the tables. -->
  <LOOP>
    <codeItems>
      from retrspect.vo_services import spaces
      yield from spaces.loop_items()
    </codeItems>
    <events passivate="True">
      <table id="space_\space\+_all" onDisk="True" adql="hidden" primary="pubdid">
        <meta name="description">Every spectrum the model of the latent
          space \space has seen, with its vector (NULL when the spectrum
          covers too little of the grid); TAP users see space_\space.</meta>
        <property name="latentMetric">\metric</property>
        <column name="pubdid" type="text" required="True"
          ucd="meta.ref.ivoid" tablehead="Pub. DID" verbLevel="1"
          description="Publisher DID of the spectrum (ssa_pubdid in
            retrspect.spectra)."/>
        <column name="obs_id" type="text" required="True"
          ucd="meta.id" tablehead="Obs. id" verbLevel="1"
          description="Short identifier of the spectrum (as in
            retrspect.spectra)."/>
        <column name="latent" type="vector(\dim)"
          ucd="src.class.struct" tablehead="Latent" verbLevel="15"
          description="The spectrum's vector in the latent space \space;
            use the gavo_ distance functions on it for similarity search."/>
        <column name="grid_coverage" type="real"
          ucd="stat.fit.param" tablehead="Grid cov." verbLevel="15"
          description="Fraction of the space's wavelength grid (in its
            frame) that the spectrum's good pixels cover."/>
        <column name="model" type="text"
          ucd="meta.code" tablehead="Model" verbLevel="20"
          description="Model that made the vector (name-version-content
            hash)."/>
        <LOOP reexpand="True">
          <codeItems>
            from retrspect.vo_services import spaces
            yield from spaces.output_columns("\space")
          </codeItems>
          <events>
            <column name="\\column" type="real" unit="\\unit"
              ucd="\\ucd" verbLevel="15" description="\\description"/>
          </events>
        </LOOP>
        <index columns="obs_id"/>
        <!-- ef_construction above pgvector's default (64): with it, a
          vector far from all others (a quasar in pca_blue) was not reachable
          from the graph, so not even a search with its own vector found it
          (128 was not enough; tests/stack/test_spaces.py queries every
          vector).  The build runs in parallel (below): 3 s, not 6 s, for
          20,000 vectors on 2 cores. -->
        <index columns="latent" name="space_\space\+_latent_hnsw" method="hnsw"
          ><option>WITH (ef_construction = 200)</option
          >latent \opclass</index>
        <FEED source="parallel_index_build"/>
      </table>

      <table id="space_\space" onDisk="True" adql="True"
          original="space_\space\+_all">
        <meta name="description">\description  Join to retrspect.spectra
          on pubdid = ssa_pubdid; retrspect.spaces describes every space.</meta>
        <property name="space">\space</property>
        <property name="latentMetric">\metric</property>
        <viewStatement>
          CREATE VIEW \\schema.space_\space AS (SELECT * FROM
            \\schema.space_\space\+_all WHERE latent IS NOT NULL)
        </viewStatement>
      </table>

      <rowmaker id="space_\space\+_rows">
        <ignoreOn><keyNull key="\model_key"/></ignoreOn>
        <map key="pubdid">getStandardPubDID(@accref)</map>
        <map key="obs_id">@obs_id</map>
        <map key="latent">vars["\latent_key"]</map>
        <map key="grid_coverage">vars["\coverage_key"]</map>
        <map key="model">vars["\model_key"]</map>
        <LOOP reexpand="True">
          <codeItems>
            from retrspect.vo_services import spaces
            yield from spaces.output_columns("\space")
          </codeItems>
          <events>
            <map key="\\column">vars["\\key"]</map>
          </events>
        </LOOP>
      </rowmaker>

      <data id="reembed_\space" auto="False" updating="True">
        <!-- run by `retrspect import`: vectors of this space made by
          another model version (or missing) are recomputed and swapped in
          one transaction; the other spaces are not touched -->
        <sources><item>spectra without vectors of the current model</item></sources>
        <embeddedGrammar>
          <iterator>
            <code>
              from retrspect.vo_services import grammars
              yield from grammars.iter_space_reembed_rows(self.grammar.rd, "\space")
            </code>
          </iterator>
        </embeddedGrammar>
        <make table="space_\space\+_all" rowmaker="space_\space\+_rows">
          <script type="newSource" lang="python" name="delete stale vectors">
            from retrspect.vo_services import grammars
            grammars.delete_stale_space_rows(table, "\space")
          </script>
        </make>
      </data>

      <data id="view_\space" auto="False">
        <!-- run by `retrspect import` after reembed_\space -->
        <make table="space_\space"/>
      </data>
    </events>
  </LOOP>

  <data id="import" updating="True">
    <recreateAfter>make_view</recreateAfter>
    <!-- one source token: the grammar finds the files under data/ that are
      not in the table yet and runs them through the batch pipeline
      (ingest.pipeline: parallel reading, preprocessing and inference) -->
    <sources><item>new files under data/</item></sources>

    <embeddedGrammar>
      <iterator>
        <code>
          from retrspect.vo_services import grammars
          yield from grammars.iter_import_rows(self.grammar.rd)
        </code>
      </iterator>
      <rowfilter procDef="//products#define">
        <bind key="table">"\schema.raw_data"</bind>
        <bind key="accref">@accref</bind>
        <!-- the product is the SDM spectrum made on the fly by datalink -->
        <bind key="path">makeAbsoluteURL("\rdId/sdl/dlget?ID="
          + urllib.parse.quote(getStandardPubDID(@accref)))</bind>
        <bind key="fsize">@sdm_size</bind>
        <bind key="datalink">"\rdId#sdl"</bind>
        <bind key="mime">"application/x-votable+xml"</bind>
        <bind key="preview">@preview</bind>
        <bind key="preview_mime">"image/png"</bind>
      </rowfilter>
    </embeddedGrammar>

    <make table="raw_data">
      <rowmaker idmaps="*">
        <apply procDef="//ssap#fill-plainlocation">
          <bind key="ra">@ra</bind>
          <bind key="dec">@dec</bind>
          <bind key="aperture">@aperture</bind>
        </apply>
        <map key="ssa_pubDID">getStandardPubDID(@accref)</map>
        <map key="datalink">\dlMetaURI{sdl}</map>
      </rowmaker>
    </make>

    <make table="ml_results">
      <rowmaker idmaps="*">
        <ignoreOn><keyNull key="latent_model"/></ignoreOn>
        <map key="pubdid">getStandardPubDID(@accref)</map>
        <map key="snr">@ssa_snr</map>
      </rowmaker>
    </make>

    <LOOP>
      <codeItems>
        from retrspect.vo_services import spaces
        yield from spaces.loop_items()
      </codeItems>
      <events>
        <make table="space_\space\+_all" rowmaker="space_\space\+_rows"/>
      </events>
    </LOOP>
  </data>

  <data id="reembed" auto="False" updating="True">
    <!-- run by `retrspect import` after the import: recomputes the ML
      results made by other model versions (or missing) and swaps them in
      one transaction -->
    <sources><item>spectra with stale ML results</item></sources>
    <embeddedGrammar>
      <iterator>
        <code>
          from retrspect.vo_services import grammars
          yield from grammars.iter_reembed_rows(self.grammar.rd)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="ml_results">
      <script type="newSource" lang="python" name="delete stale results">
        from retrspect.vo_services import grammars
        grammars.delete_stale_results(table, table.tableDef.rd)
      </script>
      <rowmaker idmaps="*">
        <ignoreOn><keyNull key="latent_model"/></ignoreOn>
        <map key="pubdid">getStandardPubDID(@accref)</map>
        <map key="snr">@ssa_snr</map>
      </rowmaker>
    </make>
  </data>

  <table id="space_models" onDisk="True">
    <!-- what each latent space's model says of itself, written by
      `retrspect import` from the installed models; the TAP view spaces
      adds the live counts -->
    <column name="space_name" type="text" ucd="meta.id;meta.main" required="True"
      description="Name of the space (pass it to search by example)."/>
    <column name="description" type="text" ucd="meta.note"
      description="What the space's model is and what it learned from."/>
    <column name="model" type="text" ucd="meta.code"
      description="Model that makes the vectors (name-version-content hash)."/>
    <column name="version" type="text" ucd="meta.version"
      description="Model version."/>
    <column name="vector_table" type="text" ucd="meta.id"
      description="Table holding the space's vectors."/>
    <column name="vector_column" type="text" ucd="meta.id"
      description="Column of vector_table holding them."/>
    <column name="metric" type="text" ucd="meta.code"
      description="Distance the vectors are trained for (l2 or cosine)."/>
    <column name="dimension" type="integer" ucd="meta.number" required="True"
      description="Length of each vector."/>
    <column name="wave_min" type="double precision" unit="Angstrom"
      ucd="em.wl;stat.min" description="Blue end of the model grid (vacuum)."/>
    <column name="wave_max" type="double precision" unit="Angstrom"
      ucd="em.wl;stat.max" description="Red end of the model grid (vacuum)."/>
    <column name="npix" type="integer" ucd="meta.number" required="True"
      description="Pixels of the model grid (log-lambda)."/>
    <column name="resolving_power" type="real" ucd="spect.resolution"
      description="Resolving power spectra are blurred to when sharper."/>
    <column name="medium" type="text" ucd="meta.code"
      description="Wavelength medium of the grid."/>
    <column name="frame" type="text" ucd="meta.code"
      description="observed, or rest (shifted by the measured redshift)."/>
    <column name="min_coverage" type="real" ucd="stat.value"
      description="Least fraction of the grid a spectrum must cover to get
        a vector."/>
    <column name="card" type="text" ucd="meta.ref.url" displayHint="type=url"
      description="The model card: what the model is, how it was made and
        measured."/>
  </table>

  <LOOP>
    <!-- one item: the SQL of the live counts names every space's table -->
    <codeItems>
      from retrspect.vo_services import spaces
      yield {"counts": spaces.counts_sql()}
    </codeItems>
    <events>
      <table id="spaces" onDisk="True" adql="True" original="space_models">
        <meta name="description">The latent spaces of this archive: where
          each space's vectors are (table and column), the wavelength grid
          its model reads and in which frame, the distance its vectors are
          for, their dimension, the model version and card, and how many
          spectra have a vector in it now.</meta>
        <column name="n_vectors" type="bigint" ucd="meta.number" required="True"
          description="Spectra with a vector in this space."/>
        <column name="n_not_covered" type="bigint" ucd="meta.number"
          required="True" description="Spectra the space's model has seen
            that cover too little of its grid for a vector."/>
        <viewStatement>
          CREATE VIEW \\schema.spaces AS (SELECT m.*, c.n_vectors,
            c.n_not_covered FROM \\schema.space_models AS m
            JOIN (\counts) AS c USING (space_name))
        </viewStatement>
      </table>
    </events>
  </LOOP>

  <data id="make_spaces" auto="False">
    <!-- run by `retrspect import` after the import and re-embedding -->
    <recreateAfter>make_spaces_view</recreateAfter>
    <sources><item>installed models</item></sources>
    <embeddedGrammar>
      <iterator>
        <code>
          from retrspect.vo_services import spaces
          yield from spaces.space_rows(self.grammar.rd)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="space_models"/>
  </data>

  <data id="make_spaces_view" auto="False">
    <make table="spaces"/>
  </data>

  <table id="spectra" onDisk="True" adql="True">
    <meta name="description">Spectra in this archive, with SSAP metadata and
      the labels their libraries publish.  Pull the spectra through the
      access URL (an SDM VOTable from the datalink service).</meta>
    <meta name="_associatedDatalinkService">
      <meta name="serviceId">sdl</meta>
      <meta name="idColumn">ssa_pubDID</meta>
    </meta>

    <mixin
      sourcetable="raw_data"
      copiedcolumns="*"
      ssa_aperture="1/3600."
      ssa_fluxunit="''"
      ssa_spectralunit="'Angstrom'"
      ssa_bandpass="'Optical'"
      ssa_fluxcalib="'RELATIVE'"
      ssa_fluxucd="'phot.flux.density;em.wl'"
      ssa_speccalib="'ABSOLUTE'"
      ssa_spectralucd="'em.wl'"
      ssa_region="ssa_region"
    >//ssap#view</mixin>

    <mixin
      calibLevel="2"
      coverage="ssa_region"
      oUCD="ssa_fluxucd"
      emUCD="ssa_spectralucd"
      >//obscore#publishSSAPMIXC</mixin>
  </table>

  <data id="make_view" auto="False">
    <make table="spectra"/>
  </data>

  <coverage>
    <updater sourceTable="spectra"/>
  </coverage>

  <table id="instance" onDisk="False">
    <mixin ssaTable="spectra"
      spectralDescription="Vacuum wavelength"
      fluxDescription="Flux density (unit as in the ssa_fluxunit param)"
      >//ssap#sdm-instance</mixin>
    <column name="flux_error" type="double precision"
      utype="spec:Spectrum.Data.FluxAxis.Accuracy.StatError"
      ucd="stat.error;phot.flux.density;em.wl"
      description="1-sigma error of the flux (NULL where unknown)"/>
    <meta name="description">One spectrum: vacuum wavelength in Angstrom,
      flux and its error as in the original file.</meta>
  </table>

  <data id="build_spectrum" auto="False">
    <embeddedGrammar>
      <iterator>
        <code>
          from retrspect.vo_services import grammars
          yield from grammars.iter_sdm_rows(self.sourceToken)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="instance">
      <parmaker>
        <apply procDef="//ssap#feedSSAToSDM"/>
        <apply name="flux_unit_of_this_spectrum">
          <code>
            from retrspect.vo_services import sdm
            sdm.set_flux_unit(targetTable,
              vars["parser_"].sourceToken["ssa_fluxunit"] or "")
          </code>
        </apply>
      </parmaker>
    </make>
  </data>

  <!-- ============ active-learning campaigns (vo_services/campaigns.py) ====
    Written only by the authenticated campaign services; published read-only
    in TAP.  Made by `make_campaigns` (updating: never dropped by an import
    or a deploy; `dachs drop retrspect/q` would drop them with the rest). -->
  <table id="campaigns" onDisk="True" adql="True" primary="campaign_id">
    <meta name="description">Active-learning campaigns: people label
      spectra as members of a target class or not; a small model on the
      campaign's latent spaces is retrained each iteration and scores the
      whole archive (retrspect.campaign_scores).</meta>
    <column name="campaign_id" type="text" ucd="meta.id;meta.main" required="True"
      description="Short name of the campaign."/>
    <column name="target_class" type="text" ucd="src.class"
      description="What the campaign looks for, in words."/>
    <column name="spaces" type="text" ucd="meta.code"
      description="The latent spaces whose vectors the campaign model reads,
        comma-separated (see retrspect.spaces)."/>
    <column name="zoom_min" type="real" unit="Angstrom" ucd="em.wl;stat.min"
      description="Start of the region shown beside the full spectrum."/>
    <column name="zoom_max" type="real" unit="Angstrom" ucd="em.wl;stat.max"
      description="End of the region shown beside the full spectrum."/>
    <column name="batch_size" type="integer" ucd="meta.number" required="True"
      description="Spectra shown per iteration (the three sets together)."/>
    <column name="iteration" type="integer" ucd="meta.number" required="True"
      description="The current iteration (1 is the first shown)."/>
    <column name="model_version" type="text" ucd="meta.version"
      description="Version of the model whose scores are current."/>
    <column name="created_by" type="text" ucd="meta.id"
      description="The user who created the campaign."/>
    <column name="created" type="timestamp" ucd="time.creation"
      description="When the campaign was created (UTC)."/>
  </table>

  <table id="campaign_batches" onDisk="True" adql="True"
      primary="campaign_id, iteration, obs_id">
    <meta name="description">What each campaign iteration showed:
      the most uncertain spectra, a random set and the top candidates
      (or the seeds, iteration 0), in order.</meta>
    <column name="campaign_id" type="text" ucd="meta.id" required="True"/>
    <column name="iteration" type="integer" ucd="meta.number" required="True"/>
    <column name="set_name" type="text" ucd="meta.code" required="True"
      description="seed, uncertain, random or candidates."/>
    <column name="batch_position" type="integer" ucd="meta.number" required="True"
      description="Order within the iteration's batch."/>
    <column name="obs_id" type="text" ucd="meta.id" required="True"/>
    <column name="score" type="real" ucd="stat.probability"
      description="The campaign model's score when shown (NULL for seeds)."/>
  </table>

  <table id="labels" onDisk="True" adql="True" primary="label_id">
    <meta name="description">Every label people gave in a campaign, as
      given: nothing is overwritten.  A changed label is a new row; a
      person's current label for a spectrum is their latest row; labels of
      different people that disagree are all kept.</meta>
    <column name="label_id" type="text" ucd="meta.id;meta.main" required="True"
      description="Identifier the labelling client chose; a repeated request
        with the same identifier is stored once."/>
    <column name="campaign_id" type="text" ucd="meta.id" required="True"/>
    <column name="iteration" type="integer" ucd="meta.number" required="True"
      description="The iteration in which the label was given."/>
    <column name="obs_id" type="text" ucd="meta.id" required="True"
      description="The spectrum labelled (retrspect.spectra.obs_id)."/>
    <column name="label" type="text" ucd="meta.code.class" required="True"
      description="yes (a member of the target class), no, noise (not
        usable) or skip (no opinion)."/>
    <column name="labeller" type="text" ucd="meta.id" required="True"
      description="The authenticated user who gave it."/>
    <column name="labelled_at" type="timestamp" ucd="time.epoch" required="True"
      description="When it was stored (UTC)."/>
  </table>

  <table id="campaign_scores" onDisk="True" adql="True"
      primary="campaign_id, model_version, obs_id">
    <meta name="description">Scores of each campaign model for every
      spectrum with vectors in the campaign's spaces: the probability of
      the target class.  Rows of earlier model versions are kept.</meta>
    <column name="campaign_id" type="text" ucd="meta.id" required="True"/>
    <column name="model_version" type="text" ucd="meta.version" required="True"
      description="Hash of the model's parameters."/>
    <column name="iteration" type="integer" ucd="meta.number" required="True"
      description="The iteration whose labels trained the model."/>
    <column name="obs_id" type="text" ucd="meta.id" required="True"/>
    <column name="score" type="real" ucd="stat.probability" required="True"
      description="Probability of the target class."/>
  </table>

  <data id="make_campaigns" auto="False" updating="True">
    <make table="campaigns"/>
    <make table="campaign_batches"/>
    <make table="labels"/>
    <make table="campaign_scores"/>
  </data>

  <service id="sdl" allowed="dlget,dlmeta">
    <meta name="title">retrspect Datalink Service</meta>
    <datalinkCore>
      <descriptorGenerator procDef="//soda#sdm_genDesc">
        <bind key="ssaTD">"\rdId#spectra"</bind>
      </descriptorGenerator>
      <dataFunction procDef="//soda#sdm_genData">
        <bind key="builder">"\rdId#build_spectrum"</bind>
      </dataFunction>
      <metaMaker semantics="#auxiliary">
        <code>
          from retrspect.vo_services import spaces
          yield from spaces.similar_links(descriptor, "\rdId")
        </code>
      </metaMaker>
      <FEED source="//soda#sdm_plainfluxcalib"/>
      <FEED source="//soda#sdm_cutout"/>
      <FEED source="//soda#sdm_format"/>
    </datalinkCore>
  </service>

  <service id="cards" allowed="static">
    <meta name="title">retrspect model cards</meta>
    <meta name="description">What each installed model is, what it learned
      from and how it was measured (Markdown; retrspect.spaces links each
      latent space's card).</meta>
    <!-- resdir/cards is linked to the installed models' cards by deploy -->
    <property name="staticData">cards</property>
    <nullCore/>
  </service>

  <service id="web" defaultRenderer="form">
    <meta name="shortName">retrspect web</meta>
    <meta name="title">retrspect spectra browser</meta>
    <dbCore queriedTable="spectra">
      <condDesc buildFrom="ssa_location"/>
      <condDesc buildFrom="ssa_targname"/>
      <condDesc buildFrom="ssa_collection"/>
    </dbCore>
    <outputTable>
      <autoCols>accref, obs_id, ssa_targname, ssa_collection, mk_type,
        teff, ssa_redshift, datalink</autoCols>
      <outputField name="similar" original="ssa_pubDID" tablehead="Similar"
          description="Browse the spectra most similar to this one">
        <formatter>
          return T.a(href=makeAbsoluteURL("\rdId/byexample/form?"
            + urllib.parse.urlencode({"ID": data, "k": 10,
              "__nevow_form__": "genForm"})))["similar spectra"]
        </formatter>
      </outputField>
      <FEED source="//ssap#atomicCoords"/>
      <outputField original="ssa_specstart" displayHint="spectralUnit=Angstrom"/>
      <outputField original="ssa_specend" displayHint="spectralUnit=Angstrom"/>
    </outputTable>
  </service>

  <service id="ssa" allowed="form,ssap.xml">
    <meta name="shortName">retrspect SSAP</meta>
    <meta name="title">retrspect spectra (SSAP)</meta>
    <meta name="ssap.complianceLevel">full</meta>
    <publish render="ssap.xml" sets="ivo_managed"/>
    <publish render="form" sets="ivo_managed,local" service="web"/>
    <ssapCore queriedTable="spectra">
      <property key="previews">auto</property>
      <FEED source="//ssap#hcd_condDescs"/>
    </ssapCore>
  </service>

  <service id="byexample" allowed="form,api">
    <meta name="shortName">retrspect by example</meta>
    <meta name="title">Search spectra by example</meta>
    <meta name="description">Upload a spectrum (FITS in any layout the
      archive reads, an SDM VOTable, or a CSV table whose header gives the
      units, like "wavelength [Angstrom], flux [erg/s/cm2/Angstrom]"), or
      name an archive spectrum by ID, and get the archive's spectra nearest
      to it in the learned latent space.  The upload is preprocessed and
      encoded by the same code and models as the archive's own spectra.
      In a browser, each neighbour is plotted over the query.</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="spectrum" type="file" tablehead="Spectrum file"
          description="The spectrum to search with (at most 10 MB)."/>
        <inputKey name="ID" type="text" tablehead="or archive spectrum"
          description="Instead of an upload: publisher DID or obs_id of
            a spectrum in this archive."/>
        <inputKey name="latent" type="text" tablehead="or latent vector"
          description="Instead of a spectrum: a vector of the chosen space,
            '[z0, z1, ...]' (for example a point the explorer's sliders
            moved to)."/>
        <inputKey name="k" type="integer" tablehead="Neighbours"
          description="Number of neighbours to return (1 to 100).">
          <values min="1" max="100" default="10"/>
        </inputKey>
        <inputKey name="space" type="text" tablehead="Latent space" multiplicity="single"
          description="The latent space to search in (see the TAP table
            retrspect.spaces; generic by default).">
          <values default="generic">
            <LOOP>
              <codeItems>
                from retrspect.vo_services import spaces
                yield from spaces.names()
              </codeItems>
              <events><option>\space</option></events>
            </LOOP>
          </values>
        </inputKey>
      </inputTable>
      <outputTable>
        <outputField name="rank" type="integer" ucd="meta.number" required="True"
          tablehead="#" description="Rank of the neighbour, nearest first."/>
        <outputField name="obs_id" type="text" ucd="meta.id"
          tablehead="Obs. id" description="Identifier of the spectrum."/>
        <outputField name="pubdid" type="text" ucd="meta.ref.ivoid"
          tablehead="Publisher DID"
          description="Publisher DID of the spectrum."/>
        <outputField name="dist" type="double precision"
          ucd="stat.value" tablehead="Distance"
          description="Distance to the query in the chosen latent space (in
            the metric its model was trained for)."/>
        <outputField name="ssa_targname" type="text" ucd="meta.id;src"
          tablehead="Target" description="Target name."/>
        <outputField name="ssa_collection" type="text" ucd="meta.id"
          tablehead="Collection" description="Collection."/>
        <outputField name="ml_class" type="text" ucd="src.class"
          tablehead="Class" description="Class from the archive's
            classifier."/>
        <outputField name="redshift" type="double precision"
          ucd="src.redshift" tablehead="z"
          description="Redshift from the archive's velocity model."/>
        <outputField name="access_url" type="text"
          ucd="meta.ref.url;meta.dataset" tablehead="Spectrum"
          displayHint="type=url"
          description="URL of the spectrum (SDM VOTable)."/>
        <outputField name="datalink" type="text" ucd="meta.ref.url"
          tablehead="Datalink" displayHint="type=url"
          description="Datalink document of the spectrum."/>
        <outputField name="plot" type="text" tablehead="Overlay"
          displayHint="noxml=true"
          description="The neighbour (red) over the query (black).">
          <formatter>
            if not data:
              return ""
            return T.img(src="data:image/png;base64,"+data,
              alt="neighbour over query", class_="overlay")
          </formatter>
        </outputField>
      </outputTable>
      <coreProc>
        <code>
          from retrspect.vo_services import byexample
          return byexample.run_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="explorer" allowed="static">
    <meta name="shortName">retrspect explorer</meta>
    <meta name="title">retrspect explorer</meta>
    <meta name="description">Browse the archive's spectra by their
      neighbours in a learned latent space: search by ID, upload or ADQL,
      overlaid interactive plots, latent sliders with the decoded spectrum,
      SAMP to TOPCAT and SPLAT-VO.  It uses the archive's own TAP, SODA and
      byexample services (vo_services/explorer.py).</meta>
    <property name="staticData">explorer</property>
    <property name="indexFile">explorer/index.html</property>
    <nullCore/>
  </service>

  <service id="decode" allowed="api,form">
    <meta name="shortName">retrspect decode</meta>
    <meta name="title">Decode a latent vector to a spectrum</meta>
    <meta name="description">The spectrum the decoder of a latent space's
      variational autoencoder makes from a latent vector (as published in
      the space's table): normalised flux on the space's grid, in its frame
      (see retrspect.spaces).  The explorer's sliders use it.</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="space" type="text" tablehead="Latent space"
          description="A space with a decoder (generic by default)."/>
        <inputKey name="latent" type="text" tablehead="Latent vector"
          description="The vector, '[z0, z1, ...]' with as many numbers as
            the space has dimensions."/>
      </inputTable>
      <outputTable>
        <param name="space" type="text" description="The latent space."/>
        <param name="frame" type="text" description="observed or rest: the
          frame of the wavelengths."/>
        <outputField name="wavelength" type="double precision" unit="Angstrom"
          ucd="em.wl" description="Vacuum wavelength of the pixel centre."/>
        <outputField name="flux" type="real" ucd="phot.flux.density;arith.ratio"
          description="Decoded flux, normalised as the model reads spectra."/>
      </outputTable>
      <coreProc>
        <code>
          from retrspect.vo_services import explorer
          return explorer.decode_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="dimensions" allowed="api,form">
    <meta name="shortName">retrspect dims</meta>
    <meta name="title">Latent dimensions of a space, most informative first</meta>
    <meta name="description">Each dimension of a latent space with its
      information about the spectrum I(x; z_d) in bits over the archive's
      spectra (where the space keeps posterior widths), its spread, and the
      archive's 1st, 50th and 99th percentiles.</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="space" type="text" tablehead="Latent space"
          description="A latent space (generic by default)."/>
      </inputTable>
      <outputTable>
        <param name="has_decoder" type="boolean" description="Whether the
          decode service can decode vectors of this space."/>
        <outputField name="dim" type="integer" ucd="meta.id" required="True"
          description="Index of the dimension in the latent vector."/>
        <outputField name="rank" type="integer" ucd="meta.number" required="True"
          description="1 for the most informative dimension."/>
        <outputField name="information" type="double precision" unit="bit"
          ucd="stat.value" description="I(x; z_d) over the archive's spectra;
            NULL where the space keeps no posterior widths."/>
        <outputField name="spread" type="double precision" ucd="stat.stdev"
          description="Standard deviation over the archive's spectra."/>
        <outputField name="low" type="double precision" ucd="stat.min"
          description="1st percentile over the archive's spectra."/>
        <outputField name="median" type="double precision" ucd="stat.median"
          description="Median over the archive's spectra."/>
        <outputField name="high" type="double precision" ucd="stat.max"
          description="99th percentile over the archive's spectra."/>
      </outputTable>
      <coreProc>
        <code>
          from retrspect.vo_services import explorer
          return explorer.dimensions_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <!-- campaign writes: members of the DaCHS group "campaigners" only
    (dachs adm adduser NAME PASSWORD; dachs adm addtogroup NAME campaigners);
    everything they write is public in TAP -->
  <service id="campaign_create" allowed="api" limitTo="campaigners">
    <meta name="title">Create an active-learning campaign</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="campaign_id" type="text" required="True"
          description="Short name: lower-case letters, digits, - and _."/>
        <inputKey name="target_class" type="text"
          description="What the campaign looks for, in words."/>
        <inputKey name="spaces" type="text"
          description="Latent spaces the campaign model reads, comma-separated
            (generic by default)."/>
        <inputKey name="seeds" type="text" required="True"
          description="obs_ids of known members of the class (at least one)."/>
        <inputKey name="batch_size" type="integer"
          description="Spectra shown per iteration (3 to 200; 20 by default)."/>
        <inputKey name="zoom_min" type="real" unit="Angstrom"
          description="Start of the region shown beside each full spectrum."/>
        <inputKey name="zoom_max" type="real" unit="Angstrom"
          description="End of that region."/>
      </inputTable>
      <outputTable original="campaigns"/>
      <coreProc>
        <code>
          from retrspect.vo_services import campaigns
          return campaigns.create_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="campaign_label" allowed="api" limitTo="campaigners">
    <meta name="title">Label a spectrum in a campaign</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="campaign_id" type="text" required="True"/>
        <inputKey name="label_id" type="text" required="True"
          description="An identifier the client makes for this label (a
            repeated request with it is stored once)."/>
        <inputKey name="obs_id" type="text" required="True"/>
        <inputKey name="label" type="text" required="True"
          description="yes, no, noise or skip."/>
      </inputTable>
      <outputTable original="labels"/>
      <coreProc>
        <code>
          from retrspect.vo_services import campaigns
          return campaigns.label_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="campaign_next" allowed="api" limitTo="campaigners">
    <meta name="title">Retrain a campaign's model and start its next iteration</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="campaign_id" type="text" required="True"/>
        <inputKey name="from_iteration" type="integer" required="True"
          description="The iteration to advance from (a repeated request
            advances once)."/>
      </inputTable>
      <outputTable original="campaigns"/>
      <coreProc>
        <code>
          from retrspect.vo_services import campaigns
          return campaigns.next_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="campaign_progress" allowed="api">
    <meta name="title">Progress of a campaign, per iteration</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="campaign_id" type="text" required="True"/>
      </inputTable>
      <outputTable>
        <outputField name="iteration" type="integer" ucd="meta.number" required="True"/>
        <outputField name="shown" type="integer" required="True" description="Spectra shown."/>
        <outputField name="labelled" type="integer" required="True" description="Of those, labelled."/>
        <outputField name="confirmed" type="integer" required="True"
          description="Labelled members of the class (people's majority)."/>
        <outputField name="random_n" type="integer" required="True"
          description="Labelled spectra of the iteration's random set."/>
        <outputField name="random_yes" type="integer" required="True"
          description="Members of the class among them."/>
        <outputField name="random_low" type="double precision" ucd="stat.min"
          description="95% Clopper-Pearson interval of the class's frequency
            from the random set: lower end."/>
        <outputField name="random_high" type="double precision" ucd="stat.max"
          description="Upper end."/>
      </outputTable>
      <coreProc>
        <code>
          from retrspect.vo_services import campaigns
          return campaigns.progress_core(self, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <regSuite title="retrspect regression">
    <regTest title="SSAP finds a MILES star by target name">
      <url REQUEST="queryData" TARGETNAME="HD004307"
        >ssa/ssap.xml</url>
      <code>
        self.assertHasStrings("MILES", "HD004307", "G0V")
      </code>
    </regTest>
    <regTest title="SSAP MAXREC=1 gives one spectrum and an overflow">
      <url REQUEST="queryData" MAXREC="1">ssa/ssap.xml</url>
      <code>
        self.assertHasStrings('name="QUERY_STATUS" value="OVERFLOW"')
      </code>
    </regTest>
    <regTest title="Datalink metadata offers the SDM spectrum and a cutout">
      <url ID="ivo://retrspect.example/~?retrspect/miles_m0028"
        >sdl/dlmeta</url>
      <code>
        self.assertHasStrings("#this", "BAND", "application/x-votable+xml")
      </code>
    </regTest>
    <regTest title="Datalink delivers an SDM VOTable">
      <url ID="ivo://retrspect.example/~?retrspect/miles_m0028"
        >sdl/dlget</url>
      <code>
        self.assertHasStrings("spec:Spectrum.Data.FluxAxis.Value",
          "Angstrom")
      </code>
    </regTest>
  </regSuite>
</resource>
