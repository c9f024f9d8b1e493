#include "common/obs/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <type_traits>
#include <utility>

#include "common/obs/log.h"

namespace coilgun::metrics {

namespace {

constexpr std::string_view kNamePrefix = "coilgun_";
constexpr std::string_view kProcessPrefix = "process_";
constexpr std::string_view kCounterSuffix = "_total";

// Prints a programming error about metric |name| and aborts. Registration and label arity
// mistakes are bugs in our own code; failing at startup is the quickest way to find them.
[[noreturn]] void die(std::string_view name, std::string_view what) {
  std::fprintf(stderr, "coilgun: metric %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
               static_cast<int>(what.size()), what.data());
  std::abort();
}

bool is_alpha_(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(std::string_view name) {
  if (name.empty() || !(is_alpha_(name[0]) || name[0] == ':')) {
    return false;
  }
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alpha_(c) || is_digit(c) || c == ':'; });
}

// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved for Prometheus itself).
bool valid_label_name(std::string_view name) {
  if (name.empty() || !is_alpha_(name[0]) || name.starts_with("__")) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) { return is_alpha_(c) || is_digit(c); });
}

// Appends |v| as a Prometheus sample value: shortest exact form, or NaN, +Inf, -Inf.
void append_prom_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    log::append_json_double(out, v);  // Same spelling: "0.0005", "1", "2.5", "1e-05".
  }
}

template <typename Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// A double as nlohmann::json: null if not finite (JSON has no NaN or infinity).
nlohmann::json json_double(double v) {
  if (!std::isfinite(v)) {
    return nullptr;
  }
  return v;
}

// The "le" label value of each bound, then "+Inf".
std::vector<std::string> le_strings(std::span<const double> bounds) {
  std::vector<std::string> out;
  out.reserve(bounds.size() + 1);
  for (double b : bounds) {
    std::string s;
    append_prom_double(s, b);
    out.push_back(std::move(s));
  }
  out.emplace_back("+Inf");
  return out;
}

// Appends |value| escaped for a Prometheus label value: \\, \" and \n.
void append_label_value(std::string& out, std::string_view value) {
  std::string valid;
  log::append_valid_utf8(valid, value);
  for (char c : valid) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// Appends |help| escaped for a HELP line: \\ and \n.
void append_help(std::string& out, std::string_view help) {
  std::string valid;
  log::append_valid_utf8(valid, help);
  for (char c : valid) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// Appends name{labels} (or name alone when |labels| is empty), then a space.
void append_sample_start(std::string& out, std::string_view name, std::string_view suffix,
                         std::string_view labels) {
  out += name;
  out += suffix;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
}

// The JSON value of one metric.
nlohmann::json metric_json(const Counter& c, const std::vector<std::string>&) { return c.value(); }
nlohmann::json metric_json(const Gauge& g, const std::vector<std::string>&) { return g.value(); }
// Buckets are an array in bound order ({"le": "0.5", "count": n}, ..., {"le": "+Inf", ...}):
// a JSON object's keys come out sorted as strings ("+Inf", "0.5", "1", "10", "2.5").
nlohmann::json metric_json(const Histogram& h, const std::vector<std::string>& le) {
  HistogramSnapshot snap = h.snapshot();
  nlohmann::json buckets = nlohmann::json::array();
  for (size_t i = 0; i < snap.cumulative.size(); ++i) {
    buckets.push_back({{"le", le[i]}, {"count", snap.cumulative[i]}});
  }
  return nlohmann::json{
      {"count", snap.count}, {"sum", json_double(snap.sum)}, {"buckets", buckets}};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Histogram

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    buckets_[i].store(0, std::memory_order_relaxed);
  }
}

void Histogram::observe(double v) noexcept {
  if (std::isnan(v)) {
    return;
  }
  // Bucket i holds bounds[i-1] < v <= bounds[i]: the first bound not less than v.
  const auto i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::snapshot() const {
  HistogramSnapshot snap;
  snap.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    snap.cumulative[i] = total;
  }
  snap.count = total;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

const char* type_name(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// ---------------------------------------------------------------------------------------------
// FamilyBase

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> labels)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(labels)) {}

FamilyBase::~FamilyBase() = default;

bool FamilyBase::same_bounds(std::span<const double>) const { return true; }

FamilyBase::Child FamilyBase::prepare_child(std::span<const std::string_view> values) const {
  Child child;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) {
      child.prom_labels += ',';
      child.json_key += ',';
    }
    child.prom_labels += label_names_[i];
    child.prom_labels += "=\"";
    append_label_value(child.prom_labels, values[i]);
    child.prom_labels += '"';
    child.json_key += label_names_[i];
    child.json_key += '=';
    log::append_valid_utf8(child.json_key, values[i]);
  }
  return child;
}

void FamilyBase::check_arity(std::span<const std::string_view> values) const {
  if (values.size() != label_names_.size()) {
    die(name_, "wrong number of label values (one per label name is required)");
  }
}

void FamilyBase::render_header(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  append_help(out, help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type_name(type_);
  out += '\n';
}

bool FamilyBase::ValuesLess::operator()(const std::vector<std::string>& a,
                                        const std::vector<std::string>& b) const {
  return a < b;
}

bool FamilyBase::ValuesLess::operator()(const std::vector<std::string>& a,
                                        std::span<const std::string_view> b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                      [](std::string_view x, std::string_view y) { return x < y; });
}

bool FamilyBase::ValuesLess::operator()(std::span<const std::string_view> a,
                                        const std::vector<std::string>& b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                      [](std::string_view x, std::string_view y) { return x < y; });
}

// ---------------------------------------------------------------------------------------------
// Family<T>

template <typename T>
Family<T>::Family(Passkey, std::string name, std::string help, Type type,
                  std::vector<std::string> labels, std::vector<double> bounds)
    : FamilyBase(std::move(name), std::move(help), type, std::move(labels)),
      bounds_(std::move(bounds)),
      le_(le_strings(bounds_)) {}

template <typename T>
T& Family<T>::with(std::span<const std::string_view> values) {
  check_arity(values);
  std::lock_guard lock(mutex_);
  auto it = children_.find(values);
  if (it != children_.end()) {
    return it->second.metric;
  }
  std::vector<std::string> key(values.begin(), values.end());
  if constexpr (std::is_same_v<T, Histogram>) {
    it = children_.try_emplace(std::move(key), prepare_child(values), std::span(bounds_)).first;
  } else {
    it = children_.try_emplace(std::move(key), prepare_child(values)).first;
  }
  return it->second.metric;
}

template <typename T>
void Family<T>::render_prometheus(std::string& out) const {
  render_header(out);
  std::lock_guard lock(mutex_);
  for (const auto& [values, entry] : children_) {
    const std::string& labels = entry.prepared.prom_labels;
    if constexpr (std::is_same_v<T, Histogram>) {
      HistogramSnapshot snap = entry.metric.snapshot();
      for (size_t i = 0; i < snap.cumulative.size(); ++i) {
        out += name();
        out += "_bucket{";
        if (!labels.empty()) {
          out += labels;
          out += ',';
        }
        out += "le=\"";
        out += le_[i];
        out += "\"} ";
        append_int(out, snap.cumulative[i]);
        out += '\n';
      }
      append_sample_start(out, name(), "_sum", labels);
      append_prom_double(out, snap.sum);
      out += '\n';
      append_sample_start(out, name(), "_count", labels);
      append_int(out, snap.count);
      out += '\n';
    } else {
      append_sample_start(out, name(), "", labels);
      append_int(out, entry.metric.value());
      out += '\n';
    }
  }
}

template <typename T>
nlohmann::json Family<T>::to_json() const {
  std::lock_guard lock(mutex_);
  if (label_names().empty()) {
    auto it = children_.begin();
    return it == children_.end() ? nlohmann::json() : metric_json(it->second.metric, le_);
  }
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [values, entry] : children_) {
    out[entry.prepared.json_key] = metric_json(entry.metric, le_);
  }
  return out;
}

template <typename T>
bool Family<T>::same_bounds(std::span<const double> bounds) const {
  return std::equal(bounds_.begin(), bounds_.end(), bounds.begin(), bounds.end());
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---------------------------------------------------------------------------------------------
// GaugeFnFamily

GaugeFnFamily::GaugeFnFamily(Passkey, std::string name, std::string help, Type type,
                             std::vector<std::string> labels)
    : FamilyBase(std::move(name), std::move(help), type, std::move(labels)) {}

void GaugeFnFamily::set(std::span<const std::string_view> values, std::function<double()> fn) {
  check_arity(values);
  std::lock_guard lock(mutex_);
  auto it = children_.find(values);
  if (!fn) {
    if (it != children_.end()) {
      children_.erase(it);
    }
    return;
  }
  if (it != children_.end()) {
    it->second.fn = std::move(fn);
    return;
  }
  children_.try_emplace(std::vector<std::string>(values.begin(), values.end()),
                        Entry{prepare_child(values), std::move(fn)});
}

void GaugeFnFamily::render_prometheus(std::string& out) const {
  render_header(out);
  std::lock_guard lock(mutex_);
  for (const auto& [values, entry] : children_) {
    append_sample_start(out, name(), "", entry.prepared.prom_labels);
    append_prom_double(out, entry.fn());
    out += '\n';
  }
}

nlohmann::json GaugeFnFamily::to_json() const {
  std::lock_guard lock(mutex_);
  if (label_names().empty()) {
    auto it = children_.begin();
    return it == children_.end() ? nlohmann::json() : json_double(it->second.fn());
  }
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [values, entry] : children_) {
    out[entry.prepared.json_key] = json_double(entry.fn());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Registry

Registry::Registry() = default;
Registry::~Registry() = default;

Result<FamilyBase*> Registry::register_family(Kind kind, std::string_view name,
                                              std::string_view help, Labels label_names,
                                              std::span<const double> bounds) {
  const bool fn = kind == Kind::kGaugeFn || kind == Kind::kCounterFn;
  const Type type = kind == Kind::kCounter || kind == Kind::kCounterFn ? Type::kCounter
                    : kind == Kind::kHistogram                         ? Type::kHistogram
                                                                       : Type::kGauge;
  if (!valid_metric_name(name)) {
    return Status(Code::kConfig, "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  if (!name.starts_with(kNamePrefix) && !name.starts_with(kProcessPrefix)) {
    return Status(Code::kConfig, "metric name must start with coilgun_ (or process_)");
  }
  if (type == Type::kCounter && !name.ends_with(kCounterSuffix)) {
    return Status(Code::kConfig, "counter name must end in _total");
  }
  if (type != Type::kCounter && name.ends_with(kCounterSuffix)) {
    return Status(Code::kConfig, "only a counter name may end in _total");
  }
  std::set<std::string_view> seen;
  for (std::string_view label : label_names) {
    if (!valid_label_name(label)) {
      return Status(Code::kConfig, "label name must match [a-zA-Z_][a-zA-Z0-9_]*, not __*");
    }
    if (type == Type::kHistogram && label == "le") {
      return Status(Code::kConfig, "a histogram may not have a label named le");
    }
    if (!seen.insert(label).second) {
      return Status(Code::kConfig, "label name repeated");
    }
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      return Status(Code::kConfig, "histogram bounds must be finite and strictly increasing");
    }
  }

  std::lock_guard lock(mutex_);
  if (auto it = families_.find(name); it != families_.end()) {
    FamilyBase* existing = it->second.get();
    const bool existing_fn = dynamic_cast<GaugeFnFamily*>(existing) != nullptr;
    const bool same_labels =
        std::equal(existing->label_names().begin(), existing->label_names().end(),
                   label_names.begin(), label_names.end());
    if (existing->type() != type || existing_fn != fn || !same_labels ||
        !existing->same_bounds(bounds)) {
      return Status(Code::kConfig,
                    "metric already registered with a different kind, labels or buckets");
    }
    return existing;
  }

  std::vector<std::string> labels(label_names.begin(), label_names.end());
  std::unique_ptr<FamilyBase> family;
  // A new family; one without labels gets its single child at once, so it renders as 0.
  const auto make = [&]<typename Family>(std::vector<double> family_bounds) {
    auto f =
        std::make_unique<Family>(typename Family::Passkey(), std::string(name), std::string(help),
                                 type, std::move(labels), std::move(family_bounds));
    if (label_names.size() == 0) f->with({});
    family = std::move(f);
  };
  switch (kind) {
    case Kind::kCounter:
      make.template operator()<CounterFamily>({});
      break;
    case Kind::kGauge:
      make.template operator()<GaugeFamily>({});
      break;
    case Kind::kHistogram:
      make.template operator()<HistogramFamily>({bounds.begin(), bounds.end()});
      break;
    case Kind::kGaugeFn:
    case Kind::kCounterFn:
      family = std::make_unique<GaugeFnFamily>(GaugeFnFamily::Passkey(), std::string(name),
                                               std::string(help), type, std::move(labels));
      break;
  }
  FamilyBase* out = family.get();
  families_.emplace(std::string(name), std::move(family));
  return out;
}

Result<CounterFamily*> Registry::try_counter(std::string_view name, std::string_view help,
                                             Labels label_names) {
  auto r = register_family(Kind::kCounter, name, help, label_names, {});
  if (!r.ok()) {
    return r.status();
  }
  return static_cast<CounterFamily*>(*r);
}

Result<GaugeFamily*> Registry::try_gauge(std::string_view name, std::string_view help,
                                         Labels label_names) {
  auto r = register_family(Kind::kGauge, name, help, label_names, {});
  if (!r.ok()) {
    return r.status();
  }
  return static_cast<GaugeFamily*>(*r);
}

Result<HistogramFamily*> Registry::try_histogram(std::string_view name, std::string_view help,
                                                 Labels label_names,
                                                 std::span<const double> bounds) {
  auto r = register_family(Kind::kHistogram, name, help, label_names, bounds);
  if (!r.ok()) {
    return r.status();
  }
  return static_cast<HistogramFamily*>(*r);
}

Result<GaugeFnFamily*> Registry::try_gauge_fn(std::string_view name, std::string_view help,
                                              Labels label_names) {
  auto r = register_family(Kind::kGaugeFn, name, help, label_names, {});
  if (!r.ok()) {
    return r.status();
  }
  return static_cast<GaugeFnFamily*>(*r);
}

CounterFamily& Registry::counter(std::string_view name, std::string_view help, Labels label_names) {
  auto r = try_counter(name, help, label_names);
  if (!r.ok()) {
    die(name, r.status().message());
  }
  return **r;
}

GaugeFamily& Registry::gauge(std::string_view name, std::string_view help, Labels label_names) {
  auto r = try_gauge(name, help, label_names);
  if (!r.ok()) {
    die(name, r.status().message());
  }
  return **r;
}

HistogramFamily& Registry::histogram(std::string_view name, std::string_view help,
                                     Labels label_names, std::span<const double> bounds) {
  auto r = try_histogram(name, help, label_names, bounds);
  if (!r.ok()) {
    die(name, r.status().message());
  }
  return **r;
}

GaugeFnFamily& Registry::gauge_fn(std::string_view name, std::string_view help,
                                  Labels label_names) {
  auto r = try_gauge_fn(name, help, label_names);
  if (!r.ok()) {
    die(name, r.status().message());
  }
  return **r;
}

Counter& Registry::counter(std::string_view name, std::string_view help) {
  return counter(name, help, Labels{}).with({});
}

Gauge& Registry::gauge(std::string_view name, std::string_view help) {
  return gauge(name, help, Labels{}).with({});
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::span<const double> bounds) {
  return histogram(name, help, Labels{}, bounds).with({});
}

void Registry::gauge_fn(std::string_view name, std::string_view help, std::function<double()> fn) {
  gauge_fn(name, help, Labels{}).set({}, std::move(fn));
}

void Registry::counter_fn(std::string_view name, std::string_view help,
                          std::function<double()> fn) {
  auto r = register_family(Kind::kCounterFn, name, help, Labels{}, {});
  if (!r.ok()) die(name, r.status().message());
  static_cast<GaugeFnFamily*>(*r)->set({}, std::move(fn));
}

std::string Registry::render_prometheus() const {
  // Families are never removed, so their pointers outlive the lock; rendering without it lets
  // a callback gauge register metrics without deadlocking.
  std::vector<const FamilyBase*> families;
  {
    std::lock_guard lock(mutex_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) {
      families.push_back(family.get());
    }
  }
  std::string out;
  for (const FamilyBase* family : families) {
    family->render_prometheus(out);
  }
  return out;
}

nlohmann::json Registry::to_json() const {
  std::vector<const FamilyBase*> families;
  {
    std::lock_guard lock(mutex_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) {
      families.push_back(family.get());
    }
  }
  nlohmann::json out = nlohmann::json::object();
  for (const FamilyBase* family : families) {
    out[family->name()] = family->to_json();
  }
  return out;
}

}  // namespace coilgun::metrics
