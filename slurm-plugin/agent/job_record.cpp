#include "job_record.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

#include <unistd.h>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/slurm/submit_options.h"

extern "C" {
#include <slurm/slurm.h>
}

namespace ckpt::slurm::agent {

JobRecord load_job_record(uint64_t job, const std::vector<std::string>& script_args,
                          const std::vector<std::string>& checkpoint_options) {
    JobRecord rec;
    auto log = log::get("slurm");
    job_info_msg_t* msg = nullptr;
    if (slurm_load_job(&msg, static_cast<uint32_t>(job), SHOW_DETAIL) != 0 || !msg ||
        msg->record_count == 0) {
        log->warn("job {}: slurm_load_job: {}", job, slurm_strerror(slurm_get_errno()));
    } else {
        const slurm_job_info_t& j = msg->job_array[0];
        auto s = [](const char* p) { return std::string(p ? p : ""); };
        rec.name = s(j.name);
        rec.cluster = s(j.cluster);
        std::vector<std::string> words;
        if (j.name) words.push_back("--job-name=" + s(j.name));
        if (j.work_dir) words.push_back("--chdir=" + s(j.work_dir));
        if (j.std_out) words.push_back("--output=" + s(j.std_out));
        if (j.std_err && s(j.std_err) != s(j.std_out)) words.push_back("--error=" + s(j.std_err));
        words.push_back(fmt::format("--nodes={}", j.num_nodes));
        words.push_back(fmt::format("--ntasks={}", j.num_tasks));
        if (j.time_limit != INFINITE && j.time_limit != NO_VAL)
            words.push_back(fmt::format("--time={}", j.time_limit));
        if (j.partition) words.push_back("--partition=" + s(j.partition));
        words.insert(words.end(), checkpoint_options.begin(), checkpoint_options.end());
        words.push_back("--");
        for (const auto& a : script_args) words.push_back(a);
        rec.submit_options = join_submit_words(words);
    }
    if (msg) slurm_free_job_info_msg(msg);

    char* buf = nullptr;
    size_t len = 0;
    FILE* out = open_memstream(&buf, &len);
    if (out && slurm_job_batch_script(out, static_cast<uint32_t>(job)) == 0) {
        std::fflush(out);
        rec.script.assign(buf, len);
    } else {
        log->warn("job {}: slurm_job_batch_script: {}", job, slurm_strerror(slurm_get_errno()));
    }
    if (out) std::fclose(out);
    std::free(buf);
    return rec;
}

void save_submission(set::JobStore& store, const std::string& script, int environment_fd) {
    auto log = log::get("slurm");
    if (!script.empty())
        if (auto r = store.save_batch_script(script); !r) log->warn("{}", r.error().message());
    if (environment_fd < 0) return;
    UniqueFd fd(environment_fd);
    std::string raw;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) raw.append(buf, static_cast<size_t>(n));
    if (n < 0) {
        log->warn("job {}: the job's environment is not saved: read: {}", store.jobid(),
                  strerror(errno));
        return;
    }
    std::vector<std::string> env;
    for (auto entry : split(raw, '\0'))
        if (!entry.empty()) env.emplace_back(entry);
    if (auto r = store.save_environment(environment_to_save(env)); !r)
        log->warn("job {}: the job's environment is not saved: {}", store.jobid(),
                  r.error().message());
}

}  // namespace ckpt::slurm::agent
