// The Brown corpus reader: tag stripping and detokenization on lines copied from the real corpus
// (ca01: press, cn01: fiction, cf01/cj01: lore and science), file selection and order, errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "trainer/corpus.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// ca01's first paragraph, a headline and the paragraph under it, in the corpus's layout.
constexpr const char* kCa01 =
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
    "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` "
    "no/at evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
    "Merger/nn-hl proposed/vbn-hl \n"
    "However/wrb ,/, the/at jury/nn said/vbd it/pps believes/vbz ``/`` these/dts two/cd "
    "offices/nns should/md be/be combined/vbn to/to achieve/vb greater/jjr efficiency/nn and/cc "
    "reduce/vb the/at cost/nn of/in administration/nn ''/'' ./.\n\n\n";

constexpr const char* kCa01Text =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
    "election produced \"no evidence\" that any irregularities took place.\n"
    "Merger proposed\n"
    "However, the jury said it believes \"these two offices should be combined to achieve "
    "greater efficiency and reduce the cost of administration.\"";

// cn01: a paragraph of several sentence lines (this edition doubles "?/."), then another one.
constexpr const char* kCn01 =
    "\n\n\tHe/pps didn't/dod* think/vb it/pps was/bedz possible/jj for/in this/dt couple/nn "
    "to/to be/be pretending/vbg ./.\n"
    "The/at boy/nn licked/vbd his/pp$ dry/jj lips/nns ./.\n"
    "He/pps asked/vbd ,/, ``/`` Could/md we/ppss have/hv a/at drink/nn ''/'' ?/. ?/.\n\n\n"
    "\tMorgan/np jerked/vbd his/pp$ head/nn toward/in the/at front/jj door/nn ./.\n"
    "``/`` In/in the/at kitchen/nn ''/'' ,/, he/pps said/vbd ./.\n\n\n";

constexpr const char* kCn01Text =
    "He didn't think it was possible for this couple to be pretending. The boy licked his dry "
    "lips. He asked, \"Could we have a drink?\"\n"
    "Morgan jerked his head toward the front door. \"In the kitchen,\" he said.";

// A fresh, empty folder for one test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) /
            (std::string("tessera_corpus_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
  }

 private:
  fs::path path_;
};

TEST(Corpus, DetokenizesNewsWithQuotesAndHeadline) {
  EXPECT_EQ(detokenize_brown_document(kCa01), kCa01Text);
}

TEST(Corpus, DetokenizesFictionParagraphsAndDoubledPunctuation) {
  EXPECT_EQ(detokenize_brown_document(kCn01), kCn01Text);
}

TEST(Corpus, DetokenizesBracketsSingleQuotesDashesAndSlashes) {
  // From cj01, cf01 (the ''/'' --/-- sequence) and ca-files ('/' Met/np '/', //in, Jr./np ./.).
  const std::string tagged =
      "\tThe/at conductivity/nn during/in eclipses/nns (/( e.g./rb ,/, Garstung/np ,/, 1958/cd "
      ")/) ./.\n"
      "What/wdt the/at movie/nn men/nns have/hv called/vbd ``/`` meeting/vbg cute/jj ''/'' --/-- "
      "that/dt is/bez ,/, boy-meets-girl/nn ./.\n\n\n"
      "\tWith/in the/at '/' Met/np '/' ,/, counts/nns //in minute/nn ;/. ;/. "
      "won/vbn by/in Ivan/np Allen/np Jr./np ./.\n";
  EXPECT_EQ(detokenize_brown_document(tagged),
            "The conductivity during eclipses (e.g., Garstung, 1958). What the movie men have "
            "called \"meeting cute\" -- that is, boy-meets-girl.\n"
            "With the 'Met', counts/minute; won by Ivan Allen Jr.");
}

TEST(Corpus, WordIsEverythingBeforeTheLastSlash) {
  EXPECT_EQ(detokenize_brown_document("\tand/or/cc 1/2/cd mg/l/nn\n"), "and/or 1/2 mg/l");
}

TEST(Corpus, LoadsDocumentsInNameOrderAndSkipsOtherFiles) {
  TempDir dir;
  dir.write("cn01", kCn01);  // written first, read second
  dir.write("ca01", kCa01);
  dir.write("README", "The Brown Corpus/nn\n");
  dir.write("CONTENTS", "ca01/x\n");
  dir.write("cats.txt", "ca01 news\ncn01 adventure\n");
  dir.write("package.json", "{}");
  dir.write("ca01.bak", "x/x\n");
  fs::create_directories(dir.path() / "cb01");  // a folder is not a document

  const std::vector<std::string> docs = load_brown_corpus(dir.path().string());
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], kCa01Text);
  EXPECT_EQ(docs[1], kCn01Text);
}

TEST(Corpus, MissingCorpusSaysHowToFetchIt) {
  TempDir dir;
  const std::string missing = (dir.path() / "brown").string();
  const std::string expected = "Brown corpus not found in '" + missing +
                               "': run scripts/fetch_corpus.sh " + dir.path().string();
  try {
    load_brown_corpus(missing);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), expected);
  }

  fs::create_directories(missing);  // present but without documents
  std::ofstream(fs::path(missing) / "README") << "no documents here";
  try {
    load_brown_corpus(missing);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), expected);
  }
}

}  // namespace
}  // namespace tessera
